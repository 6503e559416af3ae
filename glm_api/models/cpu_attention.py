"""Decode attention on the CPU in one call per layer (cpu_attention.c).

Attending one sequence at a time with PyTorch costs, per sequence and layer, a cache write
for keys and one for values, three views and a `scaled_dot_product_attention` call: about
60 us of dispatch on the 2-core EPYC we measure on, 23 ms of a 16-sequence decode step of the
24-layer benchmark model before any arithmetic. The kernel does every decode row of a layer
in one call, cache writes included, with the same per-sequence independence (batch
invariance) as the loop it replaces.

attention.py decides which sequences come here (float32 activations on the CPU, a float32,
float16 or bfloat16 cache): decode rows (one new token, nothing bidirectional left) through
`decode_attention`, which also writes their keys and values, and prompt rows through
`prefill_attention`, each over its visible window, computed as a decode row is (a position's
bits then do not depend on how its prompt was chunked). Everything else keeps PyTorch's SDPA.
"""

from __future__ import annotations

import ctypes
from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch

from glm_api.models import cpu_kernels

if TYPE_CHECKING:
    from glm_api.models.attention import LayerCache


@dataclass(slots=True)
class DecodeRows:
    """Which sequences of a step the kernel does: made once per step, used by every layer."""

    seqs: list[int]  # indices into the AttentionBatch
    rows: torch.Tensor  # (n,) int64 token row of each
    slots: torch.Tensor  # (n,) int64 cache slot
    lengths: torch.Tensor  # (n,) int64 cache rows before this token (prefix included)
    num_prefix: int  # the prefix rows counted in `lengths`
    #: the largest slot and length (-1: no rows), checked against the cache before writing
    max_slot: int
    max_length: int


@dataclass(slots=True)
class PromptRows:
    """The prompt rows of a step and each one's visible window: made once per step."""

    seqs: list[int]  # indices into the AttentionBatch
    rows: torch.Tensor  # (n,) int64 token row of each prompt row
    slots: torch.Tensor  # (n,) int64 cache slot
    visible: torch.Tensor  # (n,) int64 keys the row sees: the first ones of its slot
    num_prefix: int  # the prefix rows counted in `visible`
    max_slot: int
    max_visible: int
    min_visible: int


def load() -> ctypes.CDLL | None:
    return cpu_kernels.load()


def _head_rows(x: torch.Tensor) -> bool:
    """`(tokens, heads, dim)` with each token's heads side by side: the layout the kernel reads."""
    return x.stride(2) == 1 and x.stride(1) == x.shape[2]


#: cache dtype -> the kernel's `kind` (16-bit caches: `--kv-cache-dtype`)
CACHE_KINDS = {torch.float32: 0, torch.float16: 1, torch.bfloat16: 2}


def supports(
    query: torch.Tensor, key: torch.Tensor, value: torch.Tensor, cache: LayerCache
) -> bool:
    tensors = (query, key, value, cache.keys, cache.values)
    _, num_kv_heads, _, head_dim = cache.keys.shape
    return (
        all(t.device.type == "cpu" for t in tensors)
        and all(t.dtype == torch.float32 for t in (query, key, value))
        and cache.keys.dtype in CACHE_KINDS
        and cache.values.dtype == cache.keys.dtype
        and query.shape[2] == head_dim
        and query.shape[2] % 8 == 0
        and key.shape[1:] == value.shape[1:] == (num_kv_heads, head_dim)
        and cache.values.shape == cache.keys.shape
        and query.shape[1] % num_kv_heads == 0
        and all(_head_rows(t) for t in (query, key, value))
        and cache.keys.is_contiguous()
        and cache.values.is_contiguous()
        # the kernel writes through raw pointers: never under autograd
        and not (torch.is_grad_enabled() and any(t.requires_grad for t in tensors))
    )


def decode_attention(
    library: ctypes.CDLL,
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    keys: torch.Tensor,
    values: torch.Tensor,
    plan: DecodeRows,
    scale: float,
    out: torch.Tensor,
) -> None:
    """Write the plan's rows of `out` `(tokens, heads, dim)`, and their keys/values into the cache.

    query `(tokens, heads, dim)`, key/value `(tokens, kv_heads, dim)` (`supports` holds);
    keys/values `(slots, kv_heads, cache_len, dim)`, contiguous, of a `CACHE_KINDS` dtype.
    """
    num_heads, head_dim = query.shape[1], query.shape[2]
    if plan.max_slot >= keys.shape[0] or plan.max_length >= keys.shape[2]:
        raise IndexError(
            f"decode attention: slot {plan.max_slot} / position {plan.max_length} outside a "
            f"cache of {keys.shape[0]} slots x {keys.shape[2]} rows"
        )
    undone = library.glm_decode_attention(
        query.data_ptr(), query.stride(0),
        key.data_ptr(), key.stride(0),
        value.data_ptr(), value.stride(0),
        keys.data_ptr(), values.data_ptr(), keys.shape[2],
        plan.rows.data_ptr(), plan.slots.data_ptr(), plan.lengths.data_ptr(), len(plan.seqs),
        num_heads, key.shape[1], head_dim, scale,
        out.data_ptr(), torch.get_num_threads(), CACHE_KINDS[keys.dtype],
    )  # fmt: skip
    if undone:
        raise MemoryError(f"decode attention: no scratch memory for {undone} heads")


def prefill_attention(
    library: ctypes.CDLL,
    query: torch.Tensor,
    keys: torch.Tensor,
    values: torch.Tensor,
    plan: PromptRows,
    scale: float,
    out: torch.Tensor,
) -> None:
    """Write the plan's rows of `out` `(tokens, heads, dim)`: each attends to the first
    `visible` keys of its slot, already in the cache (nothing is written there).

    Each row is computed as a decode row is, so a prompt position has the same bits however
    its prompt was chunked or a prefix reused. query as `decode_attention` takes it.
    """
    num_heads, head_dim = query.shape[1], query.shape[2]
    if plan.max_slot >= keys.shape[0] or plan.max_visible > keys.shape[2] or plan.min_visible < 1:
        raise IndexError(
            f"prefill attention: slot {plan.max_slot} / {plan.max_visible} keys outside a "
            f"cache of {keys.shape[0]} slots x {keys.shape[2]} rows"
        )
    undone = library.glm_prefill_attention(
        query.data_ptr(), query.stride(0), keys.data_ptr(), values.data_ptr(), keys.shape[2],
        plan.rows.data_ptr(), plan.slots.data_ptr(), plan.visible.data_ptr(), plan.rows.numel(),
        num_heads, keys.shape[1], head_dim, scale,
        out.data_ptr(), torch.get_num_threads(), CACHE_KINDS[keys.dtype],
    )  # fmt: skip
    if undone:
        raise MemoryError(f"prefill attention: no scratch memory for {undone} heads")
