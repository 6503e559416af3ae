"""`load_model` end to end (weights + format + defaults), the demo model, config parsing."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from glm_api.config import Device, EngineConfig
from glm_api.formats.demo import DemoFormat
from glm_api.models import cpu_gemm
from glm_api.models.chatglm import ChatGLMForCausalLM
from glm_api.models.config import config_kind, parse_chatglm_config, parse_hf_config
from glm_api.models.demo import DEMO_NAME, build_demo_model
from glm_api.models.glm import GLMForCausalLM
from glm_api.models.loader import load_model
from glm_api.models.packed import PackedLinear
from tests.helpers.checkpoints import LAYOUTS, write_checkpoint
from tests.models.model_steps import run_steps

CPU_CONFIG = EngineConfig(device=Device.CPU)
GENERATION = {
    "chatglm-6b": "chatglm-6b",
    "chatglm2": "chatglm2",
    "chatglm3": "chatglm3",
    "glm4": "glm4",
    "glm4-hf": "glm4-hf",
    "glm4-0414": "glm4-hf",
}


def test_demo_model_is_deterministic_and_runs() -> None:
    first, second = build_demo_model(), build_demo_model()
    assert isinstance(first.format, DemoFormat)
    assert first.name == DEMO_NAME
    assert first.model.vocab_size == 272  # DemoFormat's 266 ids padded to a multiple of 8
    for a, b in zip(
        first.model.state_dict().values(), second.model.state_dict().values(), strict=True
    ):
        assert torch.equal(a, b)
    prompt = first.format.encode("hi")
    logits = first.model.compute_logits(run_steps(first.model, [prompt])[0])
    assert logits.shape == (len(prompt), 272)
    assert first.num_weight_bytes == sum(p.numel() * 4 for p in first.model.parameters())


def test_load_model_without_source_gives_the_demo() -> None:
    loaded = load_model(None, EngineConfig(device=Device.CPU, served_model_name="x"))
    assert loaded.name == "x"
    assert loaded.format.name == "demo"
    assert loaded.device == torch.device("cpu") and loaded.dtype == torch.float32


@pytest.mark.parametrize("layout", LAYOUTS)
def test_load_model_pairs_weights_with_the_generation_format(
    assets: Path, tmp_path: Path, layout: str
) -> None:
    folder = write_checkpoint(layout, tmp_path / layout, assets)
    loaded = load_model(str(folder), CPU_CONFIG)
    assert loaded.format.name == GENERATION[layout]
    assert loaded.name == layout  # the folder's name
    expected_class = ChatGLMForCausalLM if layout == "chatglm-6b" else GLMForCausalLM
    assert isinstance(loaded.model, expected_class)
    # the weights as the checkpoint holds them (float32 layers are held reordered for our
    # kernel or oneDNN), and the output layer's INT8 greedy screen where it has one
    head = loaded.model.lm_head if layout == "chatglm-6b" else loaded.model.transformer.output_layer
    screen = getattr(head, "greedy_screen", None)
    assert (screen is not None) == (cpu_gemm.load() is not None and isinstance(head, PackedLinear))
    assert loaded.num_weight_bytes == sum(
        t.numel() * t.element_size() for t in loaded.model.state_dict().values()
    ) + (screen.num_bytes() if screen is not None else 0)
    prompt = loaded.format.encode("你好")
    assert max(prompt) < loaded.model.vocab_size
    hidden = run_steps(loaded.model, [prompt], loaded.model.bidirectional_len(prompt))[0]
    assert torch.isfinite(loaded.model.compute_logits(hidden)).all()
    if layout.startswith("glm4"):
        assert loaded.generation_defaults["stop_token_ids"] == [151329, 151336, 151338]


def test_configs_of_every_layout(assets: Path) -> None:
    raw = json.loads((assets / "tokenizers/glm-4-9b-chat/config.json").read_text())
    assert config_kind(raw) == "chatglm"
    glm4 = parse_chatglm_config(raw)
    assert (glm4.vocab_size, glm4.num_layers, glm4.num_kv_heads, glm4.head_dim) == (
        151552,
        40,
        2,
        128,
    )
    assert glm4.rope_theta == 5_000_000.0 and glm4.max_position == 131072
    raw = json.loads((assets / "tokenizers/chatglm-6b/config.json").read_text())
    assert config_kind(raw) == "chatglm-v1"
    nested = {
        "model_type": "glm4",
        "hidden_size": 64,
        "num_hidden_layers": 2,
        "num_attention_heads": 4,
        "intermediate_size": 8,
        "rope_parameters": {"rope_theta": 12345.0, "partial_rotary_factor": 0.5},
    }
    assert config_kind(nested) == "glm4"
    parsed = parse_hf_config(nested)
    assert parsed.rope_theta == 12345.0 and parsed.post_layer_norms and parsed.head_dim == 16
