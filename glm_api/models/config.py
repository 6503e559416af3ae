"""Architecture configs parsed from a checkpoint's `config.json`.

Three layouts describe the v2+ architecture (`GLMConfig`): THUDM's original `chatglm`
(ChatGLM2/3, GLM-4-9B-chat), transformers' `glm` (GLM-4-9B-chat-hf) and `glm4` (GLM-4-0414).
ChatGLM-6B (v1) also says `chatglm`; it is told apart by `position_encoding_2d` /
`inner_hidden_size` (`ChatGLMv1Config`). Weight names and loading live in registry.py/loader.py.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from glm_api.models.errors import ModelLoadError


@dataclass(slots=True)
class GLMConfig:
    """ChatGLM2, ChatGLM3, GLM-4 (original, -hf and 0414): RMSNorm, GQA, SwiGLU, half rotary."""

    vocab_size: int  # embedding rows, padded (`padded_vocab_size`)
    hidden_size: int
    num_layers: int
    num_attention_heads: int
    num_kv_heads: int
    head_dim: int
    intermediate_size: int
    layernorm_epsilon: float = 1e-5
    rope_theta: float = 10000.0
    partial_rotary_factor: float = 0.5
    add_qkv_bias: bool = True
    add_bias_linear: bool = False
    #: GLM-4-0414: extra RMSNorms after attention and after the MLP, before the residual add
    post_layer_norms: bool = False
    max_position: int = 8192
    tie_word_embeddings: bool = False
    eos_token_ids: list[int] = field(default_factory=list)
    #: P-tuning v2 prefix length (0: none) and whether the prefix goes through an MLP
    pre_seq_len: int = 0
    prefix_projection: bool = False


@dataclass(slots=True)
class ChatGLMv1Config:
    """ChatGLM-6B: LayerNorm, GELU, 2D rotary positions, bidirectional context up to `<sop>`."""

    vocab_size: int
    hidden_size: int
    num_layers: int
    num_attention_heads: int
    inner_hidden_size: int
    layernorm_epsilon: float = 1e-5
    max_position: int = 2048
    bos_token_id: int = 130004  # `<sop>`: where the bidirectional context ends
    eos_token_ids: list[int] = field(default_factory=lambda: [130005])
    tie_word_embeddings: bool = False
    pre_seq_len: int = 0
    prefix_projection: bool = False

    @property
    def head_dim(self) -> int:
        return self.hidden_size // self.num_attention_heads


def _ids(value: Any) -> list[int]:
    if value is None:
        return []
    return [int(v) for v in value] if isinstance(value, list) else [int(value)]


def config_kind(raw: dict[str, Any]) -> str:
    """The registry key of a config.json: `chatglm-v1`, `chatglm`, `glm` or `glm4`."""
    model_type = raw.get("model_type")
    if model_type == "chatglm":
        is_v1 = "inner_hidden_size" in raw or raw.get("position_encoding_2d") is not None
        return "chatglm-v1" if is_v1 else "chatglm"
    if model_type in ("glm", "glm4"):
        return str(model_type)
    raise ModelLoadError(
        f"unsupported model_type {model_type!r} in config.json (expected chatglm, glm or glm4)"
    )


def _require(raw: dict[str, Any], *names: str) -> None:
    missing = [name for name in names if name not in raw]
    if missing:
        raise ModelLoadError(f"config.json lacks {', '.join(missing)}")


def parse_chatglm_config(raw: dict[str, Any]) -> GLMConfig:
    """THUDM's original layout (ChatGLM2/3, GLM-4-9B-chat), `model_type: chatglm`."""
    _require(raw, "hidden_size", "num_layers", "num_attention_heads", "ffn_hidden_size")
    if not raw.get("rmsnorm", True) or raw.get("apply_residual_connection_post_layernorm"):
        raise ModelLoadError("config.json: only rmsnorm with pre-norm residuals is supported")
    num_heads = int(raw["num_attention_heads"])
    is_mqa = bool(raw.get("multi_query_attention", False))
    return GLMConfig(
        vocab_size=int(raw.get("padded_vocab_size", raw.get("vocab_size", 0))),
        hidden_size=int(raw["hidden_size"]),
        num_layers=int(raw["num_layers"]),
        num_attention_heads=num_heads,
        num_kv_heads=int(raw["multi_query_group_num"]) if is_mqa else num_heads,
        head_dim=int(raw.get("kv_channels") or raw["hidden_size"] // num_heads),
        intermediate_size=int(raw["ffn_hidden_size"]),
        layernorm_epsilon=float(raw.get("layernorm_epsilon", 1e-5)),
        rope_theta=10000.0 * float(raw.get("rope_ratio", 1.0)),
        add_qkv_bias=bool(raw.get("add_qkv_bias", False)),
        add_bias_linear=bool(raw.get("add_bias_linear", False)),
        max_position=int(raw.get("seq_length", 8192)),
        tie_word_embeddings=bool(raw.get("tie_word_embeddings", False)),
        eos_token_ids=_ids(raw.get("eos_token_id")),
        pre_seq_len=int(raw.get("pre_seq_len") or 0),
        prefix_projection=bool(raw.get("prefix_projection", False)),
    )


def _rope_value(raw: dict[str, Any], name: str, default: float) -> float:
    """transformers 5 nests rope settings in `rope_parameters`; older files keep them flat."""
    nested = raw.get("rope_parameters") or {}
    return float(nested.get(name, raw.get(name, default)))


def parse_hf_config(raw: dict[str, Any]) -> GLMConfig:
    """transformers' layouts: `glm` (GLM-4-9B-chat-hf) and `glm4` (GLM-4-0414)."""
    _require(raw, "hidden_size", "num_hidden_layers", "num_attention_heads", "intermediate_size")
    num_heads = int(raw["num_attention_heads"])
    return GLMConfig(
        vocab_size=int(raw.get("vocab_size", 151552)),
        hidden_size=int(raw["hidden_size"]),
        num_layers=int(raw["num_hidden_layers"]),
        num_attention_heads=num_heads,
        num_kv_heads=int(raw.get("num_key_value_heads") or num_heads),
        head_dim=int(raw.get("head_dim") or raw["hidden_size"] // num_heads),
        intermediate_size=int(raw["intermediate_size"]),
        layernorm_epsilon=float(raw.get("rms_norm_eps", 1.5625e-7)),
        rope_theta=_rope_value(raw, "rope_theta", 10000.0),
        partial_rotary_factor=_rope_value(raw, "partial_rotary_factor", 0.5),
        add_qkv_bias=bool(raw.get("attention_bias", True)),
        post_layer_norms=raw.get("model_type") == "glm4",
        max_position=int(raw.get("max_position_embeddings", 131072)),
        tie_word_embeddings=bool(raw.get("tie_word_embeddings", False)),
        eos_token_ids=_ids(raw.get("eos_token_id")),
        pre_seq_len=int(raw.get("pre_seq_len") or 0),
        prefix_projection=bool(raw.get("prefix_projection", False)),
    )


def parse_chatglm_v1_config(raw: dict[str, Any]) -> ChatGLMv1Config:
    """ChatGLM-6B's `config.json` (`model_type: chatglm` with `inner_hidden_size`)."""
    _require(raw, "vocab_size", "hidden_size", "num_layers", "num_attention_heads")
    if not raw.get("position_encoding_2d", True):
        raise ModelLoadError("config.json: ChatGLM-6B without position_encoding_2d is unsupported")
    hidden = int(raw["hidden_size"])
    return ChatGLMv1Config(
        vocab_size=int(raw["vocab_size"]),
        hidden_size=hidden,
        num_layers=int(raw["num_layers"]),
        num_attention_heads=int(raw["num_attention_heads"]),
        inner_hidden_size=int(raw.get("inner_hidden_size") or 4 * hidden),
        layernorm_epsilon=float(raw.get("layernorm_epsilon", 1e-5)),
        max_position=int(raw.get("max_sequence_length", 2048)),
        bos_token_id=int(raw.get("bos_token_id", 130004)),
        eos_token_ids=_ids(raw.get("eos_token_id", 130005)),
        tie_word_embeddings=bool(raw.get("tie_word_embeddings", False)),
        pre_seq_len=int(raw.get("pre_seq_len") or 0),
        prefix_projection=bool(raw.get("prefix_projection", False)),
    )
