"""Quantized checkpoints through the real loader: `glm-api quantize` output and THUDM's."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from glm_api.config import Device, EngineConfig, Quantize
from glm_api.models.loader import load_model
from glm_api.quant import Int4Linear, Int8Linear, ThudmInt4Linear, quantize_checkpoint
from tests.helpers.checkpoints import write_checkpoint
from tests.quant.models import glm_logits, relative_error

GLM4_PROMPT = [151331, 151333, 9703, 42, 7]
PROMPTS = {"chatglm-6b": [5, 130001, 130004, 20, 30], "glm4": GLM4_PROMPT, "glm4-hf": GLM4_PROMPT}


def loaded(folder: Path, mode: Quantize = Quantize.NONE) -> torch.nn.Module:
    config = EngineConfig(model=str(folder), device=Device.CPU, quantize=mode)
    model = load_model(str(folder), config).model
    assert isinstance(model, torch.nn.Module)
    return model


@pytest.mark.parametrize("layout", ["chatglm-6b", "glm4", "glm4-hf"])
@pytest.mark.parametrize("mode", [Quantize.INT8, Quantize.INT4])
def test_quantize_checkpoint_round_trip(
    layout: str, mode: Quantize, tmp_path: Path, assets: Path
) -> None:
    source = write_checkpoint(layout, tmp_path / "float", assets)
    (source / "generation_config.json").write_text('{"temperature": 0.5}')
    output = tmp_path / "quantized"
    quantize_checkpoint(str(source), output, mode)
    config = json.loads((output / "config.json").read_text())
    entry = config["glm_api_quantization"]
    assert entry["mode"] == mode.value and entry["group_size"] == 32
    # four projections in each of the 2 layers, plus the output layer (always INT8)
    assert len(entry["modules"]) == 4 * 2 + 1
    output_layers = [name for name in entry["modules"] if ".layers." not in name]
    assert [entry["modules"][name] for name in output_layers] == ["int8"]
    assert (output / "generation_config.json").read_text() == '{"temperature": 0.5}'
    assert {p.name for p in output.glob("*.safetensors")} == {"model.safetensors"}
    saved = load_file(output / "model.safetensors")
    projections = [name for name in saved if name.endswith("mlp.dense_4h_to_h.weight")]
    assert len(projections) == 2
    assert all(saved[name].dtype in (torch.int8, torch.uint8) for name in projections)
    expected_type = Int4Linear if mode is Quantize.INT4 else Int8Linear
    model = loaded(output)  # no float copy of the projections anywhere in the folder
    layer = model.decoder_layers()[1]
    assert isinstance(layer.mlp.dense_h_to_4h, expected_type)
    prompt = PROMPTS[layout]
    logits = glm_logits(model, prompt)
    # the same codes as quantizing at load time, so the same numbers
    assert torch.equal(logits, glm_logits(loaded(source, mode), prompt))
    # measured: INT8 0.3% / 0.5%, INT4 2.8% / 4.4% (chatglm-6b / glm4 and glm4-hf)
    assert relative_error(logits, glm_logits(loaded(source), prompt)) <= (
        0.06 if mode is Quantize.INT4 else 0.02
    )


def _to_thudm_int4(
    weights: dict[str, torch.Tensor],
) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    """THUDM's quantize(bits=4) on a float checkpoint's four projections per layer, and the
    float weights those codes stand for."""
    quantized, dequantized = dict(weights), dict(weights)
    suffixes = (
        "query_key_value.weight",
        "dense.weight",
        "dense_h_to_4h.weight",
        "dense_4h_to_h.weight",
    )
    for name, weight in weights.items():
        if ".layers." not in name or not name.endswith(suffixes):
            continue
        scale = (weight.float().abs().amax(dim=1) / 7).half()
        codes = torch.round(weight.float() / scale.float()[:, None]).to(torch.int32)
        dequantized[name] = (codes.float() * scale.float()[:, None]).to(weight.dtype)
        packed = ((codes[:, 0::2] & 15) << 4) | (codes[:, 1::2] & 15)  # even column high
        quantized[name] = packed.to(torch.uint8).view(torch.int8)
        quantized[name.removesuffix("weight") + "weight_scale"] = scale
    return quantized, dequantized


def test_thudm_int4_folder_loads(tmp_path: Path, assets: Path) -> None:
    source = write_checkpoint("chatglm2", tmp_path / "float", assets)
    thudm = write_checkpoint("chatglm2", tmp_path / "int4", assets)
    float_weights = load_file(source / "model.safetensors")
    quantized, dequantized = _to_thudm_int4(float_weights)
    save_file(quantized, thudm / "model.safetensors")
    config = json.loads((thudm / "config.json").read_text())
    (thudm / "config.json").write_text(json.dumps({**config, "quantization_bit": 4}))
    model = loaded(thudm)
    assert isinstance(model.decoder_layers()[0].self_attention.query_key_value, ThudmInt4Linear)
    prompt = [64790, 64792, 100, 200, 300]
    logits = glm_logits(model, prompt)
    # the float model holding the very values the codes stand for: kernel rounding only
    # (bfloat16 activations), measured 0.24%
    save_file(dequantized, source / "model.safetensors")
    assert relative_error(logits, glm_logits(loaded(source), prompt)) <= 0.005
    # the original float weights: one 4-bit scale per row of 32 random inputs, measured 6.3%
    save_file(float_weights, source / "model.safetensors")
    assert relative_error(logits, glm_logits(loaded(source), prompt)) <= 0.10
