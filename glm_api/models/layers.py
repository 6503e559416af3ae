"""Building blocks shared by the GLM architectures: RMSNorm, rotary embeddings, P-tuning v2.

Whole decoder layers belong to the architecture files (glm.py, chatglm.py); attention over the
cache belongs to attention.py.
"""

from __future__ import annotations

import torch
from torch import nn

from glm_api.models import cpu_ops


class RMSNorm(nn.Module):
    """RMSNorm as ChatGLM2+ and transformers' GlmRMSNorm compute it (statistics in float32)."""

    def __init__(self, hidden_size: int, eps: float) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.ones(hidden_size))
        self.eps = eps

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        fused = cpu_ops.rms_norm(hidden, self.weight, self.eps)
        if fused is not None:
            return fused
        x = hidden.float()
        x = x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + self.eps)
        return self.weight * x.to(hidden.dtype)

    def add_forward(
        self, hidden: torch.Tensor, delta: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """(hidden + delta, this norm of it): the residual add and the next norm, fused."""
        fused = cpu_ops.add_rms_norm(hidden, delta, self.weight, self.eps)
        if fused is not None:
            return fused
        total = hidden + delta
        return total, self(total)


def rotary_cos_sin(
    positions: torch.Tensor,
    rotary_dim: int,
    theta: float,
    dtype: torch.dtype,
    freq_dtype: torch.dtype = torch.float32,
) -> tuple[torch.Tensor, torch.Tensor]:
    """cos and sin `(num_tokens, rotary_dim // 2)` for integer positions `(num_tokens,)`.

    The frequencies are recomputed each call (rotary_dim / 2 numbers): no buffer to carry
    through meta-device construction and loading. `freq_dtype` rounds them first (ChatGLM-6B
    stores its frequencies in float16).
    """
    exponents = torch.arange(0, rotary_dim, 2, dtype=torch.float32, device=positions.device)
    inv_freq = 1.0 / (theta ** (exponents / rotary_dim))  # (rotary_dim // 2,)
    inv_freq = inv_freq.to(freq_dtype).float()
    angles = positions.float()[:, None] * inv_freq[None, :]  # (num_tokens, rotary_dim // 2)
    return angles.cos().to(dtype), angles.sin().to(dtype)


def rotate_interleaved(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """ChatGLM2+/GLM-4: rotate pairs (x[2i], x[2i+1]) of the first 2 * cos.shape[-1] dims.

    x `(num_tokens, num_heads, head_dim)`, cos/sin `(num_tokens, rotary_dim // 2)`.
    """
    rotary_dim = 2 * cos.shape[-1]
    x_rot, x_pass = x[..., :rotary_dim], x[..., rotary_dim:]
    even, odd = x_rot[..., 0::2], x_rot[..., 1::2]  # (num_tokens, num_heads, rotary_dim // 2)
    c, s = cos[:, None, :], sin[:, None, :]
    rotated = torch.stack((even * c - odd * s, odd * c + even * s), dim=-1).flatten(-2)
    return torch.cat((rotated, x_pass), dim=-1)


def rotate_half(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """ChatGLM-6B (GPT-NeoX style): rotate x[i] with x[i + d/2] over all d = 2 * cos dims.

    x `(num_tokens, num_heads, d)`, cos/sin `(num_tokens, d // 2)`.
    """
    half = x.shape[-1] // 2
    x1, x2 = x[..., :half], x[..., half:]
    c, s = cos[:, None, :], sin[:, None, :]
    return torch.cat((x1 * c - x2 * s, x2 * c + x1 * s), dim=-1)


class PrefixEncoder(nn.Module):
    """P-tuning v2 (Liu et al. 2021) as the official ChatGLM code stores it.

    `embedding` holds one row per prefix position: either the keys/values of every layer
    directly, or (prefix_projection) an input to a two-layer tanh MLP `trans` that makes them.
    """

    def __init__(
        self, pre_seq_len: int, kv_size: int, hidden_size: int, projection_in: int | None
    ) -> None:
        """projection_in: None without the MLP; else the embedding width feeding it
        (ChatGLM-6B: hidden_size; ChatGLM2+: kv_size)."""
        super().__init__()
        self.pre_seq_len = pre_seq_len
        self.embedding = nn.Embedding(pre_seq_len, projection_in or kv_size)
        self.trans: nn.Sequential | None = None
        if projection_in is not None:
            self.trans = nn.Sequential(
                nn.Linear(projection_in, hidden_size), nn.Tanh(), nn.Linear(hidden_size, kv_size)
            )

    def key_values(
        self, num_layers: int, num_kv_heads: int, head_dim: int
    ) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """Per layer (keys, values), each `(num_kv_heads, pre_seq_len, head_dim)`."""
        prefix = self.embedding.weight  # (pre_seq_len, kv_size or hidden)
        if self.trans is not None:
            prefix = self.trans(prefix)
        # the official code views the last axis as (layer, key|value, head, dim)
        kv = prefix.view(self.pre_seq_len, 2 * num_layers, num_kv_heads, head_dim)
        kv = kv.permute(1, 2, 0, 3)  # (2 * num_layers, num_kv_heads, pre_seq_len, head_dim)
        return [(kv[2 * i], kv[2 * i + 1]) for i in range(num_layers)]
