"""Small fixed models and inputs shared by the quantization tests."""

from __future__ import annotations

import torch
from torch import nn

from glm_api.models.attention import AttentionBatch, LayerCache
from glm_api.models.config import GLMConfig
from glm_api.models.glm import GLMForCausalLM


class ResidualMLP(nn.Module):
    """A stack of pre-norm residual MLP blocks: the shape of a transformer's weight use."""

    def __init__(self, hidden: int = 256, intermediate: int = 512, num_blocks: int = 4) -> None:
        super().__init__()
        self.norms = nn.ModuleList(nn.LayerNorm(hidden) for _ in range(num_blocks))
        self.ups = nn.ModuleList(nn.Linear(hidden, intermediate) for _ in range(num_blocks))
        self.downs = nn.ModuleList(
            nn.Linear(intermediate, hidden, bias=False) for _ in range(num_blocks)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for norm, up, down in zip(self.norms, self.ups, self.downs, strict=True):
            x = x + down(torch.nn.functional.gelu(up(norm(x))))
        return x


def residual_mlp(seed: int = 0) -> ResidualMLP:
    torch.manual_seed(seed)
    return ResidualMLP().eval().requires_grad_(False)


def inputs(num_rows: int = 8, hidden: int = 256, seed: int = 1) -> torch.Tensor:
    return torch.randn(num_rows, hidden, generator=torch.Generator().manual_seed(seed))


def relative_error(actual: torch.Tensor, expected: torch.Tensor) -> float:
    return float((actual.float() - expected.float()).norm() / expected.float().norm())


def tiny_glm(seed: int = 0) -> nn.Module:
    """A 2-layer GLM-4 (original layout names) with seeded random weights.

    Embeddings have std 1 and layers 0.02, so the residual stream outweighs each layer's
    update as in a trained model; with 0.02 embeddings too (the demo model) the update is the
    whole signal and 4-bit error reaches the logits undiluted (measured 15%).
    """
    config = GLMConfig(
        vocab_size=512,
        hidden_size=128,
        num_layers=2,
        num_attention_heads=4,
        num_kv_heads=2,
        head_dim=32,
        intermediate_size=256,
    )
    torch.manual_seed(seed)
    model = GLMForCausalLM(config).eval().requires_grad_(False)
    with torch.no_grad():
        for name, param in model.named_parameters():
            if name.endswith("layernorm.weight"):
                param.fill_(1.0)
            else:
                std = 1.0 if "word_embeddings" in name else 0.02
                param.copy_(torch.randn(param.shape) * std)
    return model


def glm_logits(model: nn.Module, input_ids: list[int]) -> torch.Tensor:
    """Prefill one sequence and return its logits `(len(input_ids), vocab)`."""
    spec = model.cache_spec
    shape = (1, spec.num_kv_heads, len(input_ids), spec.head_dim)
    caches = [LayerCache(torch.zeros(shape), torch.zeros(shape)) for _ in range(spec.num_layers)]
    batch = AttentionBatch(
        slot_ids=[0],
        query_starts=[0],
        query_lens=[len(input_ids)],
        cached_lens=[0],
        bidirectional_lens=[0],
    )
    ids = torch.tensor(input_ids)
    with torch.no_grad():
        hidden = model(ids, torch.arange(len(input_ids)), batch, caches)
        return model.compute_logits(hidden)
