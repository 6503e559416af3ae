"""Test seams for the engine: a tiny CausalLM on the real attend(), and a fake ChatFormat.

The tiny model is one attention layer with learned positions, so every path the engine
drives (chunked prefill, slot cache, P-tuning prefix rows, bidirectional prompts) is real;
the format maps ids to fixed text pieces, some several characters long, so stop strings
can be split across tokens.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

from glm_api.engine.request import Request, SamplingParams
from glm_api.formats.base import ChatFormat, ChatMessage, IncrementalDecoder
from glm_api.models.attention import AttentionBatch, LayerCache, attend
from glm_api.models.base import CacheSpec, CausalLM

EOS, SOP, USER = 0, 1, 2
PIECES = ["<eos>", "<sop>", "<|user|>"] + [chr(c) for c in range(ord("a"), ord("z") + 1)]
PIECES += [" ", "ab", "cd", "xyz", "ST", "OP", "STOP", "!", ".", "hello", "\n"]
VOCAB = len(PIECES)  # 40
SPECIAL = {EOS, SOP, USER}


class TinyLM(nn.Module):
    """Embedding + learned positions + one attention layer (attend()) + MLP + lm head."""

    def __init__(
        self,
        vocab_size: int = 48,
        hidden: int = 32,
        num_heads: int = 2,
        max_position: int = 128,
        num_prefix: int = 0,
        bidirectional_id: int | None = None,
        seed: int = 0,
    ) -> None:
        super().__init__()
        torch.manual_seed(seed)
        self.vocab_size, self.max_position = vocab_size, max_position
        self.num_heads, self.head_dim = num_heads, hidden // num_heads
        self.cache_spec = CacheSpec(1, num_heads, self.head_dim, num_prefix)
        self.bidirectional_id = bidirectional_id
        self.embed = nn.Embedding(vocab_size, hidden)
        self.pos = nn.Embedding(max_position, hidden)
        self.qkv = nn.Linear(hidden, 3 * hidden)
        self.out = nn.Linear(hidden, hidden)
        self.mlp = nn.Sequential(
            nn.Linear(hidden, 2 * hidden), nn.GELU(), nn.Linear(2 * hidden, hidden)
        )
        self.head = nn.Linear(hidden, vocab_size)
        self.prefix = (
            [
                (
                    torch.randn(num_heads, num_prefix, self.head_dim),
                    torch.randn(num_heads, num_prefix, self.head_dim),
                )
            ]
            if num_prefix
            else None
        )

    def forward(
        self,
        input_ids: torch.Tensor,
        positions: torch.Tensor,
        batch: AttentionBatch,
        caches: list[LayerCache],
    ) -> torch.Tensor:
        x = self.embed(input_ids) + self.pos(positions)  # (num_tokens, hidden)
        q, k, v = self.qkv(x).view(-1, 3, self.num_heads, self.head_dim).unbind(1)
        a = attend(q, k, v, caches[0], batch, self.head_dim**-0.5, self.cache_spec.num_prefix)
        x = x + self.out(a.reshape(x.shape))
        return x + self.mlp(x)

    def compute_logits(self, hidden: torch.Tensor) -> torch.Tensor:
        return self.head(hidden).float() * 3.0  # sharper, so greedy rarely meets near-ties

    def greedy_ids(self, hidden: torch.Tensor, vocab_limit: int) -> list[int | None] | None:
        return None

    def add_greedy_screen(self) -> bool:
        return False

    def bidirectional_len(self, prompt_ids: list[int]) -> int:
        if self.bidirectional_id is None or self.bidirectional_id not in prompt_ids:
            return 0
        return prompt_ids.index(self.bidirectional_id)

    def prefix_key_values(self) -> list[tuple[torch.Tensor, torch.Tensor]] | None:
        return self.prefix


class PieceDecoder(IncrementalDecoder):
    def __init__(self, skip_special_tokens: bool) -> None:
        self.skip = skip_special_tokens

    def step(self, new_ids: Sequence[int]) -> str:
        return "".join(PIECES[i] for i in new_ids if not (self.skip and i in SPECIAL))

    def flush(self) -> str:
        return ""


class PieceFormat(ChatFormat):
    name = "demo"
    stop_token_ids = (EOS, USER)
    special_tokens = {"<eos>": EOS, "<sop>": SOP, "<|user|>": USER}
    vocab_size = VOCAB

    def encode(self, text: str, add_special_tokens: bool = True) -> list[int]:
        return [PIECES.index(c) for c in text]

    def encode_pieces(self, text: str) -> list[str]:
        return list(text)

    def decode(self, ids: Sequence[int], skip_special_tokens: bool = True) -> str:
        return PieceDecoder(skip_special_tokens).step(ids)

    def new_decoder(self, skip_special_tokens: bool = True) -> IncrementalDecoder:
        return PieceDecoder(skip_special_tokens)

    def chat_prompt(
        self, messages: Sequence[ChatMessage], tools: Sequence[dict[str, Any]] | None = None
    ) -> list[int]:
        return [i for m in messages for i in self.encode(m.content)]

    def legacy_prompt(self, query: str, history: Sequence[tuple[str, str]]) -> list[int]:
        return self.encode(query)


def make_request(
    request_id: str,
    prompt_ids: list[int],
    max_tokens: int = 8,
    stop_ids: frozenset[int] = frozenset({EOS}),
    num_bidirectional: int = 0,
    **params: Any,
) -> Request:
    params.setdefault("temperature", 0.0)
    return Request(
        request_id=request_id,
        prompt_ids=prompt_ids,
        params=SamplingParams(**params),
        max_tokens=max_tokens,
        stop_ids=stop_ids,
        num_bidirectional=num_bidirectional,
    )


def reference_greedy(model: CausalLM, prompt_ids: list[int], num_new: int, vocab: int) -> list[int]:
    """Token by token, recomputing the whole sequence each time in a fresh cache: no reuse."""
    spec = model.cache_spec
    prefix = model.prefix_key_values()
    num_bidirectional = model.bidirectional_len(prompt_ids)  # of the prompt, as the engine
    ids = list(prompt_ids)
    with torch.inference_mode():
        for _ in range(num_new):
            shape = (1, spec.num_kv_heads, spec.num_prefix + len(ids), spec.head_dim)
            caches = [
                LayerCache(torch.zeros(shape), torch.zeros(shape)) for _ in range(spec.num_layers)
            ]
            for cache, (keys, values) in zip(caches, prefix or [], strict=False):
                cache.keys[0, :, : spec.num_prefix] = keys
                cache.values[0, :, : spec.num_prefix] = values
            batch = AttentionBatch([0], [0], [len(ids)], [0], [num_bidirectional])
            hidden = model.forward(torch.tensor(ids), torch.arange(len(ids)), batch, caches)
            ids.append(int(model.compute_logits(hidden[-1:])[0, :vocab].argmax()))
    return ids[len(prompt_ids) :]
