"""The loader: every real layout loads and runs; names, shards, .bin, errors, P-tuning."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from glm_api.config import Device, DType, EngineConfig
from glm_api.models.errors import ModelLoadError
from glm_api.models.loader import (
    generation_defaults,
    load_model,
    load_weights,
    resolve_device,
    resolve_dtype,
    resolve_source,
)
from tests.helpers.checkpoints import (
    GLM4_EOS,
    HEAD_DIM,
    HIDDEN,
    LAYOUTS,
    NUM_KV_HEADS,
    NUM_LAYERS,
    write_checkpoint,
    write_prefix_checkpoint,
)
from tests.models.model_steps import run_steps

CPU, F32 = torch.device("cpu"), torch.float32
GLM4_PROMPT = [151331, 151333, 151336, 9703, 151337]
PROMPTS = {  # [gMASK] sop ... in each vocabulary; ChatGLM-6B's context ends at <sop> 130004
    "chatglm-6b": [5, 130001, 130004, 20, 30],
    "chatglm2": [64790, 64792, 100, 200, 300],
    "chatglm3": [64790, 64792, 64795, 200, 64796],
}
VOCAB = {"chatglm-6b": 130528, "chatglm2": 65024, "chatglm3": 65024}


def _load(folder: Path, **overrides: object) -> torch.nn.Module:
    return load_weights(folder, EngineConfig(model=str(folder), **overrides), CPU, F32)  # type: ignore[arg-type]


def _logits(
    model: torch.nn.Module, prompt: list[int] = GLM4_PROMPT, cache_dtype: torch.dtype = F32
) -> torch.Tensor:
    """Prefill 3 ids, then two decode steps; logits `(5, vocab)`."""
    steps = [prompt[:3], prompt[3:4], prompt[4:5]]
    bidirectional_len = model.bidirectional_len(prompt)
    hidden = torch.cat(run_steps(model, steps, bidirectional_len, cache_dtype=cache_dtype))  # type: ignore[arg-type]
    return model.compute_logits(hidden)


@pytest.fixture(scope="module")
def checkpoints(assets: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("ckpt")
    return {
        layout: write_checkpoint(layout, root / layout, assets, with_tokenizer=False)
        for layout in LAYOUTS
    }


@pytest.mark.parametrize("layout", LAYOUTS)
def test_every_layout_loads_and_runs(checkpoints: dict[str, Path], layout: str) -> None:
    model = _load(checkpoints[layout])
    logits = _logits(model, PROMPTS.get(layout, GLM4_PROMPT))
    assert logits.shape == (5, VOCAB.get(layout, 151552))
    assert logits.dtype == torch.float32
    assert torch.isfinite(logits).all()
    assert model.cache_spec.num_layers == NUM_LAYERS
    assert model.bidirectional_len(PROMPTS.get(layout, GLM4_PROMPT)) == (
        2 if layout == "chatglm-6b" else 0
    )


@pytest.mark.parametrize(
    ("dtype", "tolerance"), [(torch.float16, 5e-3), (torch.bfloat16, 4e-2)], ids=["f16", "bf16"]
)
@pytest.mark.parametrize("layout", ["chatglm-6b", "chatglm3", "glm4", "glm4-0414"])
def test_a_16_bit_kv_cache_changes_logits_by_its_rounding_only(
    checkpoints: dict[str, Path], layout: str, dtype: torch.dtype, tolerance: float
) -> None:
    """--kv-cache-dtype: keys and values rounded to 16 bits, everything else float32 (measured
    largest differences: 7e-4 with float16, 6e-3 with bfloat16, for logits up to 3)."""
    model = _load(checkpoints[layout])
    prompt = PROMPTS.get(layout, GLM4_PROMPT)
    wide, half = _logits(model, prompt), _logits(model, prompt, dtype)
    assert half.dtype == F32 and not torch.equal(half, wide)
    torch.testing.assert_close(half, wide, atol=tolerance, rtol=tolerance)


def test_original_and_hf_layouts_give_identical_logits(checkpoints: dict[str, Path]) -> None:
    original, hf = _load(checkpoints["glm4"]), _load(checkpoints["glm4-hf"])
    assert torch.equal(_logits(original), _logits(hf))


def test_sharded_and_bin_checkpoints_load_the_same_weights(
    assets: Path, tmp_path: Path, checkpoints: dict[str, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    # 3 shards split q/k/v of one layer across files: the fusion must wait for all parts
    sharded = write_checkpoint(
        "glm4-hf", tmp_path / "s", assets, num_shards=3, with_tokenizer=False
    )
    assert json.loads((sharded / "model.safetensors.index.json").read_text())["weight_map"]
    binary = write_checkpoint(
        "glm4-hf", tmp_path / "b", assets, weight_format="bin", num_shards=2, with_tokenizer=False
    )
    assert (binary / "pytorch_model.bin.index.json").is_file()
    single = write_checkpoint(
        "chatglm2", tmp_path / "one", assets, weight_format="bin", with_tokenizer=False
    )
    assert (single / "pytorch_model.bin").is_file()
    expected = _logits(_load(checkpoints["glm4-hf"]))
    capsys.readouterr()
    assert torch.equal(_logits(_load(sharded)), expected)
    assert "Loading weights" in capsys.readouterr().err  # a progress bar for multi-shard loads
    assert torch.equal(_logits(_load(binary)), expected)
    prompt = PROMPTS["chatglm2"]
    assert torch.equal(
        _logits(_load(single), prompt), _logits(_load(checkpoints["chatglm2"]), prompt)
    )


def test_bfloat16_checkpoint_is_converted_to_the_asked_dtype(assets: Path, tmp_path: Path) -> None:
    folder = write_checkpoint("glm4", tmp_path, assets, dtype=torch.bfloat16, with_tokenizer=False)
    model = _load(folder)
    assert {p.dtype for p in model.parameters()} == {torch.float32}
    assert not any(p.is_meta for p in model.parameters())


def test_loader_error_names_missing_unexpected_and_misshaped(
    checkpoints: dict[str, Path], tmp_path: Path
) -> None:
    folder = tmp_path / "broken"
    folder.mkdir()
    (folder / "config.json").write_text((checkpoints["glm4"] / "config.json").read_text())
    weights = load_file(str(checkpoints["glm4"] / "model.safetensors"))
    del weights["transformer.encoder.layers.1.mlp.dense_4h_to_h.weight"]
    weights["transformer.encoder.layers.0.mlp.extra.weight"] = torch.zeros(2)
    weights["transformer.encoder.final_layernorm.weight"] = torch.zeros(HIDDEN + 1)
    save_file(weights, str(folder / "model.safetensors"))
    with pytest.raises(ModelLoadError) as error:
        _load(folder)
    message = str(error.value)
    assert "\n" not in message
    assert "1 missing weight(s): transformer.encoder.layers.1.mlp.dense_4h_to_h.weight" in message
    assert "1 unexpected weight(s): transformer.encoder.layers.0.mlp.extra.weight" in message
    assert "transformer.encoder.final_layernorm.weight (33,) != (32,)" in message


def test_hf_layout_missing_k_proj_is_reported(checkpoints: dict[str, Path], tmp_path: Path) -> None:
    folder = tmp_path / "hf"
    folder.mkdir()
    (folder / "config.json").write_text((checkpoints["glm4-hf"] / "config.json").read_text())
    weights = load_file(str(checkpoints["glm4-hf"] / "model.safetensors"))
    del weights["model.layers.0.self_attn.k_proj.bias"]
    save_file(weights, str(folder / "model.safetensors"))
    with pytest.raises(ModelLoadError, match=r"layers\.0\.self_attention\.query_key_value\.bias"):
        _load(folder)


def test_folder_without_weights_or_config(tmp_path: Path) -> None:
    with pytest.raises(ModelLoadError, match="config.json not found"):
        _load(tmp_path)
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "llama"}))
    with pytest.raises(ModelLoadError, match="unsupported model_type 'llama'"):
        _load(tmp_path)


@pytest.mark.parametrize(
    ("layout", "kv_width"), [("chatglm3", NUM_KV_HEADS * HEAD_DIM), ("chatglm-6b", HIDDEN)]
)
def test_prefix_checkpoint_adds_ptuning_rows(
    checkpoints: dict[str, Path], tmp_path: Path, layout: str, kv_width: int
) -> None:
    prefix = write_prefix_checkpoint(tmp_path / "pytorch_model.bin", NUM_LAYERS, kv_width, 4)
    plain = _load(checkpoints[layout])
    tuned = _load(checkpoints[layout], prefix_checkpoint=str(prefix))
    assert tuned.cache_spec.num_prefix == 4
    keys, values = tuned.prefix_key_values()[1]
    assert keys.shape == values.shape == (kv_width // HEAD_DIM, 4, HEAD_DIM)
    prompt = PROMPTS[layout]
    assert not torch.allclose(_logits(plain, prompt), _logits(tuned, prompt))


@pytest.mark.parametrize(
    ("layout", "kv_width", "projection_in"),
    [
        ("chatglm3", NUM_KV_HEADS * HEAD_DIM, NUM_LAYERS * 2 * NUM_KV_HEADS * HEAD_DIM),
        ("chatglm-6b", HIDDEN, HIDDEN),
    ],
)
def test_a_projected_prefix_is_the_official_mlp_of_its_embedding(
    checkpoints: dict[str, Path], tmp_path: Path, layout: str, kv_width: int, projection_in: int
) -> None:
    path = tmp_path / "pytorch_model.bin"
    write_prefix_checkpoint(path, NUM_LAYERS, kv_width, 3, projection_in=projection_in)
    tuned = _load(checkpoints[layout], prefix_checkpoint=str(path))
    saved = torch.load(path)
    name = "transformer.prefix_encoder."
    hidden = torch.tanh(saved[name + "embedding.weight"] @ saved[name + "trans.0.weight"].t()
                        + saved[name + "trans.0.bias"])  # fmt: skip
    kv = hidden @ saved[name + "trans.2.weight"].t() + saved[name + "trans.2.bias"]
    # the official code's view of each prefix row: (layer, key|value, head, dim)
    kv = kv.view(3, 2 * NUM_LAYERS, kv_width // HEAD_DIM, HEAD_DIM).permute(1, 2, 0, 3)
    assert tuned.cache_spec.num_prefix == 3
    for layer, (keys, values) in enumerate(tuned.prefix_key_values()):
        torch.testing.assert_close(keys, kv[2 * layer], rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(values, kv[2 * layer + 1], rtol=1e-5, atol=1e-5)


def test_unknown_hub_id_offline_is_one_line(monkeypatch: pytest.MonkeyPatch) -> None:
    import huggingface_hub.constants

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    with pytest.raises(ModelLoadError) as error:
        load_model("no-such-owner/no-such-model-xyz", EngineConfig(device=Device.CPU))
    assert str(error.value).startswith("'no-such-owner/no-such-model-xyz' is not a folder")
    assert "\n" not in str(error.value)


def test_a_source_that_is_not_a_folder_is_downloaded(
    monkeypatch: pytest.MonkeyPatch, checkpoints: dict[str, Path]
) -> None:
    import huggingface_hub

    calls: list[str] = []

    def fake_download(repo_id: str, allow_patterns: list[str]) -> str:
        calls.append(repo_id)
        return str(checkpoints["glm4"])

    monkeypatch.setattr(huggingface_hub, "snapshot_download", fake_download)
    assert resolve_source("THUDM/glm-4-9b-chat") == checkpoints["glm4"]
    assert calls == ["THUDM/glm-4-9b-chat"]


def test_generation_defaults_use_sampling_param_names(tmp_path: Path, assets: Path) -> None:
    folder = write_checkpoint("glm4", tmp_path, assets, with_tokenizer=True)
    assert generation_defaults(folder) == {
        "temperature": 0.8,
        "top_p": 0.8,
        "stop_token_ids": GLM4_EOS,
    }
    raw = {"do_sample": False, "max_new_tokens": 64, "eos_token_id": 2, "top_k": 5}
    (tmp_path / "generation_config.json").write_text(json.dumps(raw))
    assert generation_defaults(tmp_path) == {
        "temperature": 0.0,
        "top_k": 5,
        "max_tokens": 64,
        "stop_token_ids": [2],
    }


def test_device_and_dtype_resolution() -> None:
    assert resolve_dtype(DType.AUTO, CPU) == torch.float32
    assert resolve_dtype(DType.AUTO, torch.device("cuda")) == torch.bfloat16
    assert resolve_dtype(DType.FLOAT16, CPU) == torch.float16
    assert resolve_device(Device.CPU) == CPU
    if not torch.cuda.is_available():
        with pytest.raises(ModelLoadError, match="no CUDA device"):
            resolve_device(Device.CUDA)


def test_a_cache_of_another_dtype_is_widened_with_the_queries_not_narrowed() -> None:
    """bfloat16 activations over a float16 cache (or the reverse): SDPA runs in float32."""
    import torch.nn.functional as F

    from glm_api.models.attention import AttentionBatch, LayerCache, attend

    torch.manual_seed(2)
    shape = (1, 2, 16, 32)
    cache = LayerCache(torch.randn(shape).half(), torch.randn(shape).half())
    q, k, v = torch.randn(3, 4, 32).bfloat16(), torch.randn(3, 2, 32), torch.randn(3, 2, 32)
    batch = AttentionBatch([0], [0], [3], [5], [0])
    out = attend(q, k.bfloat16(), v.bfloat16(), cache, batch, 0.25)
    assert out.dtype == torch.bfloat16
    keys, values = cache.keys[0, :, :8].float()[None], cache.values[0, :, :8].float()[None]
    mask = torch.ones(3, 8, dtype=torch.bool).tril(diagonal=5)
    expected = F.scaled_dot_product_attention(
        q.float().transpose(0, 1)[None], keys, values, attn_mask=mask, scale=0.25, enable_gqa=True
    )[0].transpose(0, 1)
    assert torch.equal(out, expected.bfloat16())
