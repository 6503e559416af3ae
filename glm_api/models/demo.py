"""The built-in demo model: a tiny GLM-4-architecture model with seeded random weights.

It lets the server start with no checkpoint (no files, no network); its answers are noise.
The tokenizer side is `glm_api.formats.demo.DemoFormat`. Real checkpoints go through loader.py.
"""

from __future__ import annotations

import torch

from glm_api.formats.demo import DemoFormat
from glm_api.models.config import GLMConfig
from glm_api.models.glm import GLMForCausalLM
from glm_api.models.loader import LoadedModel, count_weight_bytes

DEMO_NAME = "glm-demo"
DEMO_SEED = 20240605


def demo_config(vocab_size: int, eos_token_ids: list[int]) -> GLMConfig:
    return GLMConfig(
        vocab_size=-(-vocab_size // 8) * 8,  # padded to a multiple of 8, as real GLMs pad
        hidden_size=64,
        num_layers=2,
        num_attention_heads=4,
        num_kv_heads=2,
        head_dim=16,
        intermediate_size=128,
        layernorm_epsilon=1.5625e-7,
        rope_theta=10000.0,
        max_position=8192,
        eos_token_ids=eos_token_ids,
    )


def build_demo_model(
    dtype: torch.dtype = torch.float32, device: torch.device | None = None
) -> LoadedModel:
    """The demo model, identical on every call (weights from a fixed seed)."""
    device = device or torch.device("cpu")
    chat_format = DemoFormat()
    config = demo_config(chat_format.vocab_size, list(chat_format.stop_token_ids))
    with torch.device("meta"):
        model = GLMForCausalLM(config)
    model.to_empty(device="cpu")
    generator = torch.Generator().manual_seed(DEMO_SEED)
    with torch.no_grad():
        for name, param in model.named_parameters():
            if name.endswith("layernorm.weight"):
                param.fill_(1.0)
            else:  # GPT-2's init scale: keeps the tiny model's activations tame
                param.copy_(torch.randn(param.shape, generator=generator) * 0.02)
    model.to(device=device, dtype=dtype).eval().requires_grad_(False)
    return LoadedModel(
        model=model,
        format=chat_format,
        generation_defaults={},
        name=DEMO_NAME,
        device=device,
        dtype=dtype,
        num_weight_bytes=count_weight_bytes(model),
    )
