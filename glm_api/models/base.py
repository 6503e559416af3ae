"""What the engine may assume of a model: the `CausalLM` protocol and its cache shape.

Every architecture file (chatglm.py for v1, glm.py for v2+) implements this; the engine's
runner builds the inputs and never looks inside a model.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol, runtime_checkable

import torch

from glm_api.models.attention import AttentionBatch, LayerCache


@dataclass(slots=True, frozen=True)
class CacheSpec:
    """The shape of one sequence's KV cache, per layer."""

    num_layers: int
    num_kv_heads: int
    head_dim: int
    #: P-tuning v2 prefix length (rows reserved at the start of every slot)
    num_prefix: int = 0


@runtime_checkable
class CausalLM(Protocol):
    """A GLM language model as the engine sees it."""

    cache_spec: CacheSpec
    #: rows of the output layer (may exceed the tokenizer's vocabulary: padded)
    vocab_size: int
    #: the longest context the checkpoint supports (`seq_length` / `max_position_embeddings`)
    max_position: int

    def forward(
        self,
        input_ids: torch.Tensor,
        positions: torch.Tensor,
        batch: AttentionBatch,
        caches: list[LayerCache],
    ) -> torch.Tensor:
        """input_ids, positions `(num_tokens,)` -> hidden states `(num_tokens, hidden)`.

        positions are plain 0-based indices within each sequence; a model with its own
        position scheme (v1's two-dimensional positions) derives it from these and
        `batch.bidirectional_lens`.
        """
        ...

    def compute_logits(self, hidden: torch.Tensor) -> torch.Tensor:
        """`(num_rows, hidden)` -> float32 logits `(num_rows, vocab_size)`."""
        ...

    def greedy_ids(self, hidden: torch.Tensor, vocab_limit: int) -> list[int | None] | None:
        """`(num_rows, hidden)` -> each row's argmax over its first `vocab_limit` logits, exactly
        as `compute_logits(...).argmax()` would give it (None for a row the model leaves to
        that), or None where the model has no faster way (greedy_screen.py)."""
        ...

    def add_greedy_screen(self) -> bool:
        """Prepare `greedy_ids` (float32 on a CPU: an INT8 copy of the output layer); whether
        it serves."""
        ...

    def bidirectional_len(self, prompt_ids: list[int]) -> int:
        """How many prompt tokens see each other both ways (v1: up to `<sop>`), else 0."""
        ...

    def prefix_key_values(self) -> list[tuple[torch.Tensor, torch.Tensor]] | None:
        """P-tuning v2: per layer `(keys, values)` each `(num_kv_heads, num_prefix, head_dim)`."""
        ...
