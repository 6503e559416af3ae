"""ChatGLM-6B (v1): THUDM's `modeling_chatglm.py` of chatglm-6b, reproduced.

LayerNorm, GELU (tanh form), a fused qkv projection laid out head by head ([q k v] per head),
two-dimensional rotary positions (the first half of each head rotates by the position, the
second half by the block position), a bidirectional context up to `<sop>`, and residuals that
add the *normalised* input scaled by alpha = sqrt(2 * num_layers) (GLM-130B's DeepNorm).

Weight files are read by loader.py; the slot cache and masks are handled by attention.py.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from glm_api.models import packed
from glm_api.models.attention import AttentionBatch, LayerCache, attend
from glm_api.models.base import CacheSpec
from glm_api.models.config import ChatGLMv1Config
from glm_api.models.layers import PrefixEncoder, rotary_cos_sin, rotate_half


def positions_2d(
    positions: torch.Tensor, batch: AttentionBatch
) -> tuple[torch.Tensor, torch.Tensor]:
    """Plain positions `(num_tokens,)` -> (position, block position), each `(num_tokens,)`.

    With a context of ctx tokens ending in `[gMASK]`, `<sop>` (at index ctx): the context
    counts 0..ctx-1, every later token keeps position ctx - 1 (the mask's) and counts its
    block position 1, 2, ... A sequence without `<sop>` (ctx 0) uses plain positions.
    """
    ctx = torch.repeat_interleave(
        torch.tensor(batch.bidirectional_lens, device=positions.device),
        torch.tensor(batch.query_lens, device=positions.device),
    )  # (num_tokens,)
    has_ctx = ctx > 0
    position = torch.where(has_ctx, torch.minimum(positions, ctx - 1), positions)
    block = torch.where(has_ctx, (positions - ctx + 1).clamp(min=0), torch.zeros_like(positions))
    return position, block


class Attention(nn.Module):
    def __init__(self, config: ChatGLMv1Config) -> None:
        super().__init__()
        self.num_heads, self.head_dim = config.num_attention_heads, config.head_dim
        hidden = config.hidden_size
        self.query_key_value = nn.Linear(hidden, 3 * hidden)
        self.dense = nn.Linear(hidden, hidden)

    def forward(
        self,
        hidden: torch.Tensor,
        rope: tuple[torch.Tensor, ...],
        batch: AttentionBatch,
        cache: LayerCache,
        num_prefix: int,
    ) -> torch.Tensor:
        qkv = self.query_key_value(hidden).view(-1, self.num_heads, 3 * self.head_dim)
        q, k, v = qkv.chunk(3, dim=-1)  # (num_tokens, num_heads, head_dim) each
        cos, sin, block_cos, block_sin = rope
        half = self.head_dim // 2
        q = torch.cat(
            (
                rotate_half(q[..., :half], cos, sin),
                rotate_half(q[..., half:], block_cos, block_sin),
            ),
            dim=-1,
        )
        k = torch.cat(
            (
                rotate_half(k[..., :half], cos, sin),
                rotate_half(k[..., half:], block_cos, block_sin),
            ),
            dim=-1,
        )
        out = attend(q, k, v.contiguous(), cache, batch, self.head_dim**-0.5, num_prefix)
        return self.dense(out.reshape(hidden.shape[0], -1))


class MLP(nn.Module):
    def __init__(self, config: ChatGLMv1Config) -> None:
        super().__init__()
        self.dense_h_to_4h = nn.Linear(config.hidden_size, config.inner_hidden_size)
        self.dense_4h_to_h = nn.Linear(config.inner_hidden_size, config.hidden_size)

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        return self.dense_4h_to_h(F.gelu(self.dense_h_to_4h(hidden), approximate="tanh"))


class GLMBlock(nn.Module):
    def __init__(self, config: ChatGLMv1Config) -> None:
        super().__init__()
        eps = config.layernorm_epsilon
        self.input_layernorm = nn.LayerNorm(config.hidden_size, eps=eps)
        self.attention = Attention(config)
        self.post_attention_layernorm = nn.LayerNorm(config.hidden_size, eps=eps)
        self.mlp = MLP(config)
        self.alpha = (2 * config.num_layers) ** 0.5

    def forward(
        self,
        hidden: torch.Tensor,
        rope: tuple[torch.Tensor, ...],
        batch: AttentionBatch,
        cache: LayerCache,
        num_prefix: int,
    ) -> torch.Tensor:
        attn_input = self.input_layernorm(hidden)
        hidden = attn_input * self.alpha + self.attention(
            attn_input, rope, batch, cache, num_prefix
        )
        mlp_input = self.post_attention_layernorm(hidden)
        return mlp_input * self.alpha + self.mlp(mlp_input)


class _Transformer(nn.Module):
    def __init__(self, config: ChatGLMv1Config) -> None:
        super().__init__()
        self.word_embeddings = nn.Embedding(config.vocab_size, config.hidden_size)
        self.layers = nn.ModuleList(GLMBlock(config) for _ in range(config.num_layers))
        self.final_layernorm = nn.LayerNorm(config.hidden_size, eps=config.layernorm_epsilon)
        self.prefix_encoder: PrefixEncoder | None = None
        if config.pre_seq_len > 0:
            kv_size = config.num_layers * 2 * config.hidden_size
            projection_in = config.hidden_size if config.prefix_projection else None
            self.prefix_encoder = PrefixEncoder(
                config.pre_seq_len, kv_size, config.hidden_size, projection_in
            )


class ChatGLMForCausalLM(nn.Module):
    """ChatGLM-6B as a `CausalLM` (see base.py)."""

    layer_prefix = "transformer.layers."

    def __init__(self, config: ChatGLMv1Config) -> None:
        super().__init__()
        self.config = config
        self.transformer = _Transformer(config)
        self.lm_head = nn.Linear(config.hidden_size, config.vocab_size, bias=False)
        if config.tie_word_embeddings:
            self.tie_weights()
        self.cache_spec = CacheSpec(
            config.num_layers, config.num_attention_heads, config.head_dim, config.pre_seq_len
        )
        self.vocab_size = config.vocab_size
        self.max_position = config.max_position

    def tie_weights(self) -> None:
        self.lm_head.weight = self.transformer.word_embeddings.weight

    def decoder_layers(self) -> list[nn.Module]:
        return list(self.transformer.layers)

    def forward(
        self,
        input_ids: torch.Tensor,
        positions: torch.Tensor,
        batch: AttentionBatch,
        caches: list[LayerCache],
    ) -> torch.Tensor:
        hidden = self.transformer.word_embeddings(input_ids)  # (num_tokens, hidden)
        position, block = positions_2d(positions, batch)
        rotary_dim = self.config.head_dim // 2  # each of the two position kinds gets half
        rope = (
            *rotary_cos_sin(position, rotary_dim, 10000.0, hidden.dtype, torch.float16),
            *rotary_cos_sin(block, rotary_dim, 10000.0, hidden.dtype, torch.float16),
        )
        num_prefix = self.cache_spec.num_prefix
        for layer, cache in zip(self.transformer.layers, caches, strict=True):
            hidden = layer(hidden, rope, batch, cache, num_prefix)
        return self.transformer.final_layernorm(hidden)

    def compute_logits(self, hidden: torch.Tensor) -> torch.Tensor:
        return self.lm_head(hidden).float()  # (num_rows, vocab_size)

    def greedy_ids(self, hidden: torch.Tensor, vocab_limit: int) -> list[int | None] | None:
        return packed.greedy_ids(self.lm_head, hidden, vocab_limit)

    def add_greedy_screen(self) -> bool:
        return packed.add_greedy_screen(self.lm_head)

    def bidirectional_len(self, prompt_ids: list[int]) -> int:
        """Index of the last `<sop>` (bos): the tokens before it see each other both ways."""
        bos = self.config.bos_token_id
        for index in range(len(prompt_ids) - 1, -1, -1):
            if prompt_ids[index] == bos:
                return index
        return 0

    def prefix_key_values(self) -> list[tuple[torch.Tensor, torch.Tensor]] | None:
        encoder = self.transformer.prefix_encoder
        if encoder is None:
            return None
        with torch.no_grad():
            return encoder.key_values(
                self.config.num_layers, self.config.num_attention_heads, self.config.head_dim
            )
