"""Attention over the engine's slot KV cache: the one place a model meets the cache.

The cache gives every running sequence a slot: one contiguous `(num_kv_heads, max_len,
head_dim)` region per layer for keys and one for values. Contiguity is the point: on a CPU
the attention of a sequence reads its keys in place, with no gather of scattered blocks
(a gather costs as much memory traffic again as the attention itself).

This module does not decide which sequence gets which slot (engine/kv_cache.py) nor what a
layer computes around the attention (the model files).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
import torch.nn.functional as F

from glm_api.models import cpu_attention


@dataclass(slots=True)
class AttentionBatch:
    """Where each sequence of a flattened batch sits, made once per step by the runner.

    Tokens of all sequences are concatenated: sequence i owns rows
    `query_starts[i] : query_starts[i] + query_lens[i]` of every `(num_tokens, ...)` tensor.
    """

    slot_ids: list[int]
    query_starts: list[int]
    query_lens: list[int]
    #: tokens of the sequence already in the cache before this step (prefix excluded)
    cached_lens: list[int]
    #: ChatGLM-6B (v1): prompt tokens before `<sop>` that see each other both ways; else 0
    bidirectional_lens: list[int]
    #: each sequence's prompt length, where known: a one-token chunk of a prompt is then
    #: prefilled (as its other chunks), not decoded, so a prompt position gets the same bits
    #: however its prompt was split into chunks (and a reused prefix stays exact) on SDPA too
    prompt_lens: list[int] = field(default_factory=list)
    #: the decode rows for the CPU kernel, made by the first layer that asks (then reused)
    _decode_rows: cpu_attention.DecodeRows | None = field(default=None, repr=False)
    #: the prompt rows for the CPU kernel, likewise
    _prompt_rows: cpu_attention.PromptRows | None = field(default=None, repr=False)

    @property
    def num_seqs(self) -> int:
        return len(self.slot_ids)

    def is_prompt_row(self, i: int) -> bool:
        """Sequence i's chunk is (part of) its prompt, where the prompt lengths are known."""
        return bool(self.prompt_lens) and self.cached_lens[i] < self.prompt_lens[i]

    def decode_rows(self, num_prefix: int) -> cpu_attention.DecodeRows:
        """Sequences whose one new token attends to everything before it (no mask needed)."""
        plan = self._decode_rows
        if plan is None or plan.num_prefix != num_prefix:
            seqs = [
                i
                for i in range(self.num_seqs)
                if self.query_lens[i] == 1
                and self.cached_lens[i] >= self.bidirectional_lens[i]
                and not self.is_prompt_row(i)
            ]
            slots = [self.slot_ids[i] for i in seqs]
            lengths = [num_prefix + self.cached_lens[i] for i in seqs]
            plan = cpu_attention.DecodeRows(
                seqs=seqs,
                rows=torch.tensor([self.query_starts[i] for i in seqs], dtype=torch.long),
                slots=torch.tensor(slots, dtype=torch.long),
                lengths=torch.tensor(lengths, dtype=torch.long),
                num_prefix=num_prefix,
                max_slot=max(slots, default=-1),
                max_length=max(lengths, default=-1),
            )
            self._decode_rows = plan
        return plan

    def prompt_rows(self, num_prefix: int, seqs: list[int]) -> cpu_attention.PromptRows:
        """Every row of the chunks of `seqs` and its visible window, a prefix of its slot's
        keys: the rows `_mask` lets it see (causal, bidirectional prompt, P-tuning prefix)."""
        plan = self._prompt_rows
        if plan is None or plan.num_prefix != num_prefix or plan.seqs != seqs:
            rows: list[int] = []
            slots: list[int] = []
            visible: list[int] = []
            for i in seqs:
                num_cached, num_new = self.cached_lens[i], self.query_lens[i]
                bidirectional = self.bidirectional_lens[i]
                for j in range(num_new):
                    position = num_cached + j
                    seen = position + 1
                    if position < bidirectional:
                        seen = max(seen, bidirectional)
                    rows.append(self.query_starts[i] + j)
                    slots.append(self.slot_ids[i])
                    # keys past this chunk are not there yet
                    visible.append(num_prefix + min(seen, num_cached + num_new))
            plan = cpu_attention.PromptRows(
                seqs=list(seqs),
                rows=torch.tensor(rows, dtype=torch.long),
                slots=torch.tensor(slots, dtype=torch.long),
                visible=torch.tensor(visible, dtype=torch.long),
                num_prefix=num_prefix,
                max_slot=max(slots, default=-1),
                max_visible=max(visible, default=0),
                min_visible=min(visible, default=1),
            )
            self._prompt_rows = plan
        return plan


@dataclass(slots=True)
class LayerCache:
    """One layer's keys and values for every slot: each `(num_slots, num_kv_heads, max_len, head_dim)`."""

    keys: torch.Tensor
    values: torch.Tensor


def _mask(
    num_new: int, num_cached: int, num_prefix: int, num_bidirectional: int, device: torch.device
) -> torch.Tensor:
    """Boolean `(num_new, num_prefix + num_cached + num_new)`, True where a query may look."""
    total = num_prefix + num_cached + num_new
    query_pos = torch.arange(num_cached, num_cached + num_new, device=device)  # (num_new,)
    key_pos = torch.arange(total, device=device) - num_prefix  # prefix keys get negative positions
    visible = key_pos[None, :] <= query_pos[:, None]
    if num_bidirectional > 0:
        in_context = (query_pos[:, None] < num_bidirectional) & (
            key_pos[None, :] < num_bidirectional
        )
        visible = visible | in_context
    return visible


def attend(
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    cache: LayerCache,
    batch: AttentionBatch,
    scale: float,
    num_prefix: int = 0,
) -> torch.Tensor:
    """Write this step's keys/values into the cache and attend, each sequence on its own.

    query `(num_tokens, num_heads, head_dim)`, key/value `(num_tokens, num_kv_heads, head_dim)`;
    returns `(num_tokens, num_heads, head_dim)`. `num_prefix` cache rows at the start of every
    slot hold P-tuning v2 prefix keys/values, visible to every token.

    Each request's arithmetic is independent of its neighbours (batch invariance) and reads
    its slot in place. The cache may hold a narrower dtype than the activations (written
    rounded, read widened). On the CPU in float32, our kernel (cpu_attention.py) takes the
    decode rows of the step in one call and the prompt rows in another, each row computed the
    same way: a position's bits do not depend on how its prompt was chunked or whether a
    prefix was reused (SDPA's do, with AVX-512). Every other device: one SDPA call a sequence.
    """
    out = torch.empty(query.shape, dtype=query.dtype, device=query.device)
    num_heads, num_kv_heads = query.shape[1], key.shape[1]
    use_gqa = num_heads != num_kv_heads
    remaining: range | list[int] = range(batch.num_seqs)
    library = cpu_attention.load() if query.device.type == "cpu" else None
    if library is not None and cpu_attention.supports(query, key, value, cache):
        plan = batch.decode_rows(num_prefix)
        if plan.seqs:
            cpu_attention.decode_attention(
                library, query, key, value, cache.keys, cache.values, plan, scale, out
            )
            done = set(plan.seqs)
            remaining = [i for i in remaining if i not in done]
        if remaining:
            prompt = batch.prompt_rows(num_prefix, list(remaining))
            for i in prompt.seqs:
                _write_chunk(key, value, cache, batch, num_prefix, i)
            cpu_attention.prefill_attention(
                library, query, cache.keys, cache.values, prompt, scale, out
            )
        return out
    for i in remaining:
        start, num_new = batch.query_starts[i], batch.query_lens[i]
        slot, num_cached = batch.slot_ids[i], batch.cached_lens[i]
        hi = _write_chunk(key, value, cache, batch, num_prefix, i)
        keys = cache.keys[slot, :, :hi].unsqueeze(0)  # (1, num_kv_heads, hi, head_dim)
        values = cache.values[slot, :, :hi].unsqueeze(0)
        q = query[start : start + num_new].transpose(0, 1).unsqueeze(0)  # (1, heads, new, dim)
        if keys.dtype != q.dtype:  # a cache of another dtype (--kv-cache-dtype): both widened
            work = torch.promote_types(q.dtype, keys.dtype)  # exactly (bf16 and f16: float32)
            q, keys, values = q.to(work), keys.to(work), values.to(work)
        mask = None
        # a decode row attends to everything: no mask. Prompt rows get one even when a chunk
        # holds one row, so SDPA takes the same path for every chunk (the same bits)
        prompt_row = batch.is_prompt_row(i)
        if num_new > 1 or batch.bidirectional_lens[i] > 0 or prompt_row:
            mask = _mask(num_new, num_cached, num_prefix, batch.bidirectional_lens[i], query.device)
            if num_new == 1 and prompt_row:
                # SDPA's products run one query row another way than two or more (GEMV, not
                # GEMM): a one-row prompt chunk goes as two, to the bits of a longer chunk
                q, mask = torch.cat([q, q], dim=2), torch.cat([mask, mask])
        o = F.scaled_dot_product_attention(
            q, keys, values, attn_mask=mask, scale=scale, enable_gqa=use_gqa
        )  # (1, heads, new, dim)
        out[start : start + num_new] = o[0, :, :num_new].transpose(0, 1)
    return out


def _write_chunk(
    key: torch.Tensor,
    value: torch.Tensor,
    cache: LayerCache,
    batch: AttentionBatch,
    num_prefix: int,
    i: int,
) -> int:
    """Sequence i's new keys and values into its slot; returns the slot's rows now filled."""
    start, num_new = batch.query_starts[i], batch.query_lens[i]
    slot, lo = batch.slot_ids[i], num_prefix + batch.cached_lens[i]
    cache.keys[slot, :, lo : lo + num_new] = key[start : start + num_new].transpose(0, 1)
    cache.values[slot, :, lo : lo + num_new] = value[start : start + num_new].transpose(0, 1)
    return lo + num_new
