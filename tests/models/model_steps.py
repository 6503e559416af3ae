"""Drive a `CausalLM` through the slot cache the way the engine's runner does (test helper)."""

from __future__ import annotations

import torch

from glm_api.models.attention import AttentionBatch, LayerCache
from glm_api.models.base import CausalLM


def make_caches(
    model: CausalLM, num_slots: int = 2, max_len: int = 32, dtype: torch.dtype = torch.float32
) -> list[LayerCache]:
    """Empty caches with the model's prefix rows filled in every slot."""
    spec = model.cache_spec
    shape = (num_slots, spec.num_kv_heads, spec.num_prefix + max_len, spec.head_dim)
    caches = [
        LayerCache(torch.zeros(shape, dtype=dtype), torch.zeros(shape, dtype=dtype))
        for _ in range(spec.num_layers)
    ]
    prefix = model.prefix_key_values()
    if prefix is not None:
        for cache, (keys, values) in zip(caches, prefix, strict=True):
            cache.keys[:, :, : spec.num_prefix] = keys
            cache.values[:, :, : spec.num_prefix] = values
    return caches


def run_batch(
    model: CausalLM,
    caches: list[LayerCache],
    seqs: list[tuple[int, list[int], int, int]],
) -> list[torch.Tensor]:
    """One forward over several sequences: (slot, new ids, cached_len, bidirectional_len) each.

    Returns each sequence's hidden states `(len(new ids), hidden)`.
    """
    input_ids: list[int] = []
    positions: list[int] = []
    starts: list[int] = []
    for _, ids, cached, _ in seqs:
        starts.append(len(input_ids))
        input_ids += ids
        positions += range(cached, cached + len(ids))
    batch = AttentionBatch(
        slot_ids=[slot for slot, _, _, _ in seqs],
        query_starts=starts,
        query_lens=[len(ids) for _, ids, _, _ in seqs],
        cached_lens=[cached for _, _, cached, _ in seqs],
        bidirectional_lens=[bidi for _, _, _, bidi in seqs],
    )
    with torch.no_grad():
        hidden = model.forward(torch.tensor(input_ids), torch.tensor(positions), batch, caches)
    return [hidden[s : s + len(ids)] for s, (_, ids, _, _) in zip(starts, seqs, strict=True)]


def run_steps(
    model: CausalLM,
    steps: list[list[int]],
    bidirectional_len: int = 0,
    slot: int = 1,
    cache_dtype: torch.dtype = torch.float32,
) -> list[torch.Tensor]:
    """Prefill `steps[0]`, then feed each later step with the cache carried over."""
    caches = make_caches(model, dtype=cache_dtype)
    outputs, cached = [], 0
    for ids in steps:
        outputs.append(run_batch(model, caches, [(slot, ids, cached, bidirectional_len)])[0])
        cached += len(ids)
    return outputs
