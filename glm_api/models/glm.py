"""The v2+ GLM architecture: ChatGLM2-6B, ChatGLM3-6B, GLM-4-9B-chat (-hf) and GLM-4-0414.

Reproduces THUDM's `modeling_chatglm.py` (chatglm2/3-6b, glm-4-9b-chat) and transformers'
`GlmForCausalLM` / `Glm4ForCausalLM`: RMSNorm, grouped-query attention with a fused qkv
projection (bias), rotary embeddings on the first half of each head in interleaved pairs
(base 10000 * rope_ratio), SwiGLU MLP with a fused gate/up projection. GLM-4-0414 adds an
RMSNorm after attention and after the MLP, before each residual add.

Parameter names are those of the original checkpoint; `HF_NAME_TABLE` maps the -hf/0414 names
onto them. Weight files are read by loader.py; the slot cache is handled by attention.py.
"""

from __future__ import annotations

from typing import Any, Literal

import torch
import torch.nn.functional as F
from torch import nn

from glm_api.models import cpu_decoder, cpu_ops, packed
from glm_api.models.attention import AttentionBatch, LayerCache, attend
from glm_api.models.base import CacheSpec
from glm_api.models.config import GLMConfig
from glm_api.models.layers import PrefixEncoder, RMSNorm, rotary_cos_sin, rotate_interleaved

#: transformers name (regex) -> (original name, part, number of parts): parts are fused by
#: concatenation along the output rows, in part order (q, k, v).
HF_NAME_TABLE: list[tuple[str, str, int, int]] = [
    (r"model\.embed_tokens\.weight", "transformer.embedding.word_embeddings.weight", 0, 1),
    (r"model\.norm\.weight", "transformer.encoder.final_layernorm.weight", 0, 1),
    (r"lm_head\.weight", "transformer.output_layer.weight", 0, 1),
    (
        r"model\.layers\.(\d+)\.self_attn\.q_proj\.(weight|bias)",
        r"transformer.encoder.layers.\1.self_attention.query_key_value.\2",
        0,
        3,
    ),
    (
        r"model\.layers\.(\d+)\.self_attn\.k_proj\.(weight|bias)",
        r"transformer.encoder.layers.\1.self_attention.query_key_value.\2",
        1,
        3,
    ),
    (
        r"model\.layers\.(\d+)\.self_attn\.v_proj\.(weight|bias)",
        r"transformer.encoder.layers.\1.self_attention.query_key_value.\2",
        2,
        3,
    ),
    (
        r"model\.layers\.(\d+)\.self_attn\.o_proj\.(weight|bias)",
        r"transformer.encoder.layers.\1.self_attention.dense.\2",
        0,
        1,
    ),
    (
        r"model\.layers\.(\d+)\.mlp\.gate_up_proj\.weight",
        r"transformer.encoder.layers.\1.mlp.dense_h_to_4h.weight",
        0,
        1,
    ),
    (
        r"model\.layers\.(\d+)\.mlp\.down_proj\.weight",
        r"transformer.encoder.layers.\1.mlp.dense_4h_to_h.weight",
        0,
        1,
    ),
    (
        r"model\.layers\.(\d+)\.(input_layernorm|post_attention_layernorm|post_self_attn_layernorm"
        r"|post_mlp_layernorm)\.weight",
        r"transformer.encoder.layers.\1.\2.weight",
        0,
        1,
    ),
]


class SelfAttention(nn.Module):
    def __init__(self, config: GLMConfig) -> None:
        super().__init__()
        self.num_heads, self.num_kv_heads = config.num_attention_heads, config.num_kv_heads
        self.head_dim = config.head_dim
        q_size, kv_size = self.num_heads * self.head_dim, self.num_kv_heads * self.head_dim
        self.query_key_value = nn.Linear(
            config.hidden_size, q_size + 2 * kv_size, bias=config.add_qkv_bias
        )
        self.dense = nn.Linear(q_size, config.hidden_size, bias=config.add_bias_linear)

    def forward(
        self,
        hidden: torch.Tensor,
        cos: torch.Tensor,
        sin: torch.Tensor,
        batch: AttentionBatch,
        cache: LayerCache,
        num_prefix: int,
    ) -> torch.Tensor:
        q_size, kv_size = self.num_heads * self.head_dim, self.num_kv_heads * self.head_dim
        qkv = self.query_key_value(hidden)  # (num_tokens, q_size + 2 * kv_size)
        qkv = qkv.reshape(-1, q_size + 2 * kv_size)
        # q's and k's heads lie side by side at the start of each row: one in-place pass
        rotated = cpu_ops.rotate_interleaved_(
            qkv, self.num_heads + self.num_kv_heads, self.head_dim, cos, sin
        )
        q, k, v = qkv.split([q_size, kv_size, kv_size], dim=-1)
        q = q.view(-1, self.num_heads, self.head_dim)
        k = k.view(-1, self.num_kv_heads, self.head_dim)
        if not rotated:
            q, k = rotate_interleaved(q, cos, sin), rotate_interleaved(k, cos, sin)
        v = v.view(-1, self.num_kv_heads, self.head_dim)
        out = attend(q, k, v, cache, batch, self.head_dim**-0.5, num_prefix)
        return self.dense(out.reshape(-1, q_size))  # (num_tokens, hidden)


class MLP(nn.Module):
    def __init__(self, config: GLMConfig) -> None:
        super().__init__()
        bias = config.add_bias_linear
        self.dense_h_to_4h = nn.Linear(config.hidden_size, 2 * config.intermediate_size, bias=bias)
        self.dense_4h_to_h = nn.Linear(config.intermediate_size, config.hidden_size, bias=bias)

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        gate_up = self.dense_h_to_4h(hidden)  # (num_tokens, 2 * intermediate)
        fused = cpu_ops.silu_mul(gate_up)
        if fused is not None:
            return self.dense_4h_to_h(fused)
        gate, up = gate_up.chunk(2, dim=-1)  # (num_tokens, intermediate) each
        return self.dense_4h_to_h(F.silu(gate) * up)


class GLMBlock(nn.Module):
    def __init__(self, config: GLMConfig) -> None:
        super().__init__()
        eps = config.layernorm_epsilon
        self.input_layernorm = RMSNorm(config.hidden_size, eps)
        self.self_attention = SelfAttention(config)
        self.post_attention_layernorm = RMSNorm(config.hidden_size, eps)
        self.mlp = MLP(config)
        self.post_self_attn_layernorm: RMSNorm | None = None
        self.post_mlp_layernorm: RMSNorm | None = None
        if config.post_layer_norms:
            self.post_self_attn_layernorm = RMSNorm(config.hidden_size, eps)
            self.post_mlp_layernorm = RMSNorm(config.hidden_size, eps)

    def forward(
        self,
        hidden: torch.Tensor,
        cos: torch.Tensor,
        sin: torch.Tensor,
        batch: AttentionBatch,
        cache: LayerCache,
        num_prefix: int,
    ) -> torch.Tensor:
        attn = self.self_attention(self.input_layernorm(hidden), cos, sin, batch, cache, num_prefix)
        if self.post_self_attn_layernorm is not None:
            attn = self.post_self_attn_layernorm(attn)
        hidden, normed = self.post_attention_layernorm.add_forward(hidden, attn)
        mlp = self.mlp(normed)
        if self.post_mlp_layernorm is not None:
            mlp = self.post_mlp_layernorm(mlp)
        return hidden + mlp


class _Embedding(nn.Module):
    def __init__(self, config: GLMConfig) -> None:
        super().__init__()
        self.word_embeddings = nn.Embedding(config.vocab_size, config.hidden_size)


class _Encoder(nn.Module):
    def __init__(self, config: GLMConfig) -> None:
        super().__init__()
        self.layers = nn.ModuleList(GLMBlock(config) for _ in range(config.num_layers))
        self.final_layernorm = RMSNorm(config.hidden_size, config.layernorm_epsilon)


class _Transformer(nn.Module):
    def __init__(self, config: GLMConfig) -> None:
        super().__init__()
        self.embedding = _Embedding(config)
        self.encoder = _Encoder(config)
        self.output_layer = nn.Linear(config.hidden_size, config.vocab_size, bias=False)
        self.prefix_encoder: PrefixEncoder | None = None
        if config.pre_seq_len > 0:
            kv_size = config.num_layers * 2 * config.num_kv_heads * config.head_dim
            projection_in = kv_size if config.prefix_projection else None
            self.prefix_encoder = PrefixEncoder(
                config.pre_seq_len, kv_size, config.hidden_size, projection_in
            )


class GLMForCausalLM(nn.Module):
    """The v2+ model as a `CausalLM` (see base.py)."""

    #: where decoder layer N's parameters live (the loader quantizes layer by layer)
    layer_prefix = "transformer.encoder.layers."

    def __init__(self, config: GLMConfig) -> None:
        super().__init__()
        self.config = config
        self.transformer = _Transformer(config)
        if config.tie_word_embeddings:
            self.tie_weights()
        self.cache_spec = CacheSpec(
            config.num_layers, config.num_kv_heads, config.head_dim, config.pre_seq_len
        )
        self.vocab_size = config.vocab_size
        self.max_position = config.max_position
        self.rotary_dim = int(config.head_dim * config.partial_rotary_factor)
        #: the layers as cpu_decoder.c takes them: made at the first decode step (False: never)
        self._decoder_plan: cpu_decoder.DecoderPlan | Literal[False] | None = None

    def tie_weights(self) -> None:
        self.transformer.output_layer.weight = self.transformer.embedding.word_embeddings.weight

    def decoder_layers(self) -> list[nn.Module]:
        return list(self.transformer.encoder.layers)

    def forward(
        self,
        input_ids: torch.Tensor,
        positions: torch.Tensor,
        batch: AttentionBatch,
        caches: list[LayerCache],
    ) -> torch.Tensor:
        hidden = self.transformer.embedding.word_embeddings(input_ids)  # (num_tokens, hidden)
        cos, sin = rotary_cos_sin(positions, self.rotary_dim, self.config.rope_theta, hidden.dtype)
        num_prefix = self.cache_spec.num_prefix
        plan = self._cpu_decoder_plan() if hidden.device.type == "cpu" else None
        if plan is not None:
            out = cpu_decoder.decode_step(plan, hidden, cos, sin, batch, caches, num_prefix)
            if out is not None:
                return out
        for layer, cache in zip(self.transformer.encoder.layers, caches, strict=True):
            hidden = layer(hidden, cos, sin, batch, cache, num_prefix)
        return self.transformer.encoder.final_layernorm(hidden)

    def _apply(self, fn: Any, recurse: bool = True) -> Any:
        self._decoder_plan = None  # moved or cast: the plan's pointers are the old tensors'
        return super()._apply(fn, recurse)

    def _load_from_state_dict(self, *args: Any, **kwargs: Any) -> None:
        self._decoder_plan = None  # quantized layers repack from the new weights
        super()._load_from_state_dict(*args, **kwargs)

    def _cpu_decoder_plan(self) -> cpu_decoder.DecoderPlan | None:
        if self._decoder_plan is None:
            self._decoder_plan = cpu_decoder.make_plan(self) or False
        return self._decoder_plan or None

    def compute_logits(self, hidden: torch.Tensor) -> torch.Tensor:
        return self.transformer.output_layer(hidden).float()  # (num_rows, vocab_size)

    def greedy_ids(self, hidden: torch.Tensor, vocab_limit: int) -> list[int | None] | None:
        return packed.greedy_ids(self.transformer.output_layer, hidden, vocab_limit)

    def add_greedy_screen(self) -> bool:
        return packed.add_greedy_screen(self.transformer.output_layer)

    def bidirectional_len(self, prompt_ids: list[int]) -> int:
        return 0

    def prefix_key_values(self) -> list[tuple[torch.Tensor, torch.Tensor]] | None:
        encoder = self.transformer.prefix_encoder
        if encoder is None:
            return None
        with torch.no_grad():
            return encoder.key_values(
                self.config.num_layers, self.config.num_kv_heads, self.config.head_dim
            )
