"""THUDM's pre-quantized layout (chatglm-6b-int4, chatglm2-6b-int4): swap, load, compare."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

from glm_api.quant import Int8Linear, ThudmInt4Linear, is_prequantized, prepare_for_checkpoint_
from tests.quant.models import glm_logits, relative_error, tiny_glm

THUDM_LAYERS = ("query_key_value", "dense", "dense_h_to_4h", "dense_4h_to_h")
IDS = [3, 17, 42, 99, 5, 250, 7, 64, 128, 1]


def thudm_state_dict(model: nn.Module, bits: int) -> tuple[dict[str, torch.Tensor], nn.Module]:
    """What THUDM's quantize() would save for `model`, and the float model it dequantizes to.

    Per layer: `weight_scale` = row absmax / (2^(bits-1) - 1) in float16, codes rounded; for
    4 bits two codes per int8, the even column in the high nibble (their compress kernel).
    """
    state = dict(model.state_dict())
    dequantized = copy.deepcopy(model)
    for name, module in dequantized.named_modules():
        if not (isinstance(module, nn.Linear) and name.rsplit(".", 1)[-1] in THUDM_LAYERS):
            continue
        if "layers." not in name:
            continue
        weight = module.weight.detach()
        scale = (weight.abs().amax(dim=1) / (2 ** (bits - 1) - 1)).half()
        codes = torch.round(weight / scale.float()[:, None]).to(torch.int8)  # (out, in)
        module.weight.copy_(codes.float() * scale.float()[:, None])
        if bits == 4:
            high, low = codes[:, 0::2].to(torch.int32), codes[:, 1::2].to(torch.int32)
            codes = (((high & 15) << 4) | (low & 15)).to(torch.uint8).view(torch.int8)
        state[name + ".weight"] = codes
        state[name + ".weight_scale"] = scale
    return state, dequantized


@pytest.mark.parametrize("bits", [4, 8])
def test_thudm_checkpoint_loads_and_matches(bits: int) -> None:
    model = tiny_glm()
    state, dequantized = thudm_state_dict(model, bits)
    target = tiny_glm(seed=1)
    prepare_for_checkpoint_(target, {"quantization_bit": bits})
    layer = target.transformer.encoder.layers[1]
    expected_type = ThudmInt4Linear if bits == 4 else Int8Linear
    for module in (layer.self_attention.query_key_value, layer.mlp.dense_4h_to_h):
        assert isinstance(module, expected_type)
    assert isinstance(target.transformer.output_layer, nn.Linear)  # THUDM keeps it float
    assert state["transformer.encoder.layers.0.mlp.dense_h_to_4h.weight"].shape == (
        (512, 64) if bits == 4 else (512, 128)
    )
    target.load_state_dict(state, strict=True)
    logits = glm_logits(target, IDS)
    # against the same codes dequantized in float32: only the kernels' rounding differs
    assert relative_error(logits, glm_logits(dequantized, IDS)) <= 0.005  # measured 0.02-0.04%
    # against the float model: THUDM's one scale per row (measured INT4 0.8%, INT8 0.06%)
    assert relative_error(logits, glm_logits(model, IDS)) <= (0.06 if bits == 4 else 0.02)


def test_thudm_state_dict_reads_back_after_packing() -> None:
    state, _ = thudm_state_dict(tiny_glm(), 4)
    target = tiny_glm(seed=1)
    prepare_for_checkpoint_(target, {"quantization_bit": 4})
    target.load_state_dict(state)
    glm_logits(target, IDS)  # packs
    name = "transformer.encoder.layers.0.self_attention.dense.weight"
    assert torch.equal(target.state_dict()[name], state[name])


def test_float_and_unsupported_configs() -> None:
    assert not is_prequantized({"quantization_bit": 0})  # THUDM's float 6B configs say so
    assert not is_prequantized({})
    assert is_prequantized({"quantization_bit": 4})
    assert is_prequantized({"glm_api_quantization": {"mode": "int8"}})
    model = tiny_glm()
    prepare_for_checkpoint_(model, {"quantization_bit": 0})
    prepare_for_checkpoint_(model, {})
    assert not any(isinstance(m, (Int8Linear, ThudmInt4Linear)) for m in model.modules())
    with pytest.raises(ValueError):
        prepare_for_checkpoint_(model, {"quantization_bit": 3})
    with pytest.raises(ValueError):
        prepare_for_checkpoint_(model, {"quantization_bit": 4, "quantization_embeddings": True})
