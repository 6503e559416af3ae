"""Tiny random checkpoints in every real GLM layout, with the real tokenizer files.

`write_checkpoint(layout, out_dir, assets)` writes config.json, weights (safetensors or
`pytorch_model*.bin`, optionally sharded with an index) and the generation's real tokenizer
files copied from the shared assets, and returns the folder. Weight names and shapes follow
the published checkpoints; the vocabulary sizes are the real ones so every token id is valid,
everything else is tiny (hidden 32, 2 layers). The same `seed` gives the same weights in the
original GLM-4 layout and in the -hf layout (q/k/v split), so both must give equal logits.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import tempfile
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import save_file

LAYOUTS = ("chatglm-6b", "chatglm2", "chatglm3", "glm4", "glm4-hf", "glm4-0414")
HIDDEN, NUM_LAYERS, NUM_HEADS, NUM_KV_HEADS, HEAD_DIM, FFN = 32, 2, 4, 2, 8, 64
GLM4_ROPE_RATIO = 500  # GLM-4-9B-chat's; the -hf layouts get rope_theta = 10000 * 500

_ASSET_FOLDER = {
    "chatglm-6b": "chatglm-6b",
    "chatglm2": "chatglm2-6b",
    "chatglm3": "chatglm3-6b",
    "glm4": "glm-4-9b-chat",
    "glm4-hf": "glm-4-9b-chat",
    "glm4-0414": "glm-4-9b-chat",
}
#: hand-written chat templates of the -hf layouts (owned by tests/formats)
_TEMPLATES = Path(__file__).resolve().parents[1] / "formats" / "data"
_TOKENIZER_FILES = ("ice_text.model", "tokenizer.model", "tokenizer_config.json")
GLM4_EOS = [151329, 151336, 151338]


def _original_config(layout: str, assets: Path) -> dict[str, Any]:
    raw = json.loads((assets / "tokenizers" / _ASSET_FOLDER[layout] / "config.json").read_text())
    raw.update(hidden_size=HIDDEN, num_layers=NUM_LAYERS, num_attention_heads=NUM_HEADS)
    if layout == "chatglm-6b":
        raw.update(inner_hidden_size=FFN)
    else:
        raw.update(kv_channels=HEAD_DIM, multi_query_group_num=NUM_KV_HEADS, ffn_hidden_size=FFN)
        if "num_hidden_layers" in raw:
            raw["num_hidden_layers"] = NUM_LAYERS
    return raw


def _hf_config(layout: str) -> dict[str, Any]:
    is_0414 = layout == "glm4-0414"
    return {
        "architectures": ["Glm4ForCausalLM" if is_0414 else "GlmForCausalLM"],
        "model_type": "glm4" if is_0414 else "glm",
        "vocab_size": 151552,
        "hidden_size": HIDDEN,
        "intermediate_size": FFN,
        "num_hidden_layers": NUM_LAYERS,
        "num_attention_heads": NUM_HEADS,
        "num_key_value_heads": NUM_KV_HEADS,
        "head_dim": HEAD_DIM,
        "hidden_act": "silu",
        "partial_rotary_factor": 0.5,
        "rope_theta": 10000.0 if is_0414 else 10000.0 * GLM4_ROPE_RATIO,
        "rms_norm_eps": 1.5625e-07,
        "attention_bias": True,
        "attention_dropout": 0.0,
        "max_position_embeddings": 32768 if is_0414 else 131072,
        "pad_token_id": 151329,
        "eos_token_id": GLM4_EOS,
        "tie_word_embeddings": False,
        "torch_dtype": "bfloat16",
    }


def config_json(layout: str, assets: Path) -> dict[str, Any]:
    """The tiny model's config.json for `layout`."""
    if layout.endswith("-hf") or layout.endswith("-0414"):
        return _hf_config(layout)
    return _original_config(layout, assets)


class _Random:
    def __init__(self, seed: int) -> None:
        self.generator = torch.Generator().manual_seed(seed)

    def normal(self, *shape: int, std: float = 0.1, mean: float = 0.0) -> torch.Tensor:
        return torch.randn(shape, generator=self.generator) * std + mean

    def norm(self) -> torch.Tensor:
        return self.normal(HIDDEN, std=0.1, mean=1.0)


def _v1_weights(vocab: int, rnd: _Random) -> dict[str, torch.Tensor]:
    """ChatGLM-6B names and shapes (with its stored rotary frequencies)."""
    weights = {"transformer.word_embeddings.weight": rnd.normal(vocab, HIDDEN, std=1.0)}
    for i in range(NUM_LAYERS):
        p = f"transformer.layers.{i}."
        weights |= {
            p + "input_layernorm.weight": rnd.norm(),
            p + "input_layernorm.bias": rnd.normal(HIDDEN),
            p + "attention.query_key_value.weight": rnd.normal(3 * HIDDEN, HIDDEN),
            p + "attention.query_key_value.bias": rnd.normal(3 * HIDDEN),
            p + "attention.dense.weight": rnd.normal(HIDDEN, HIDDEN),
            p + "attention.dense.bias": rnd.normal(HIDDEN),
            p + "attention.rotary_emb.inv_freq": torch.ones(HEAD_DIM // 4),
            p + "post_attention_layernorm.weight": rnd.norm(),
            p + "post_attention_layernorm.bias": rnd.normal(HIDDEN),
            p + "mlp.dense_h_to_4h.weight": rnd.normal(FFN, HIDDEN),
            p + "mlp.dense_h_to_4h.bias": rnd.normal(FFN),
            p + "mlp.dense_4h_to_h.weight": rnd.normal(HIDDEN, FFN),
            p + "mlp.dense_4h_to_h.bias": rnd.normal(HIDDEN),
        }
    weights["transformer.final_layernorm.weight"] = rnd.norm()
    weights["transformer.final_layernorm.bias"] = rnd.normal(HIDDEN)
    weights["lm_head.weight"] = rnd.normal(vocab, HIDDEN)
    return weights


def _v2_weights(vocab: int, rnd: _Random, post_norms: bool) -> dict[str, torch.Tensor]:
    """ChatGLM2/3 and GLM-4-9B-chat names (plus GLM-4-0414's post norms when asked)."""
    qkv = (NUM_HEADS + 2 * NUM_KV_HEADS) * HEAD_DIM
    weights = {
        "transformer.embedding.word_embeddings.weight": rnd.normal(vocab, HIDDEN, std=1.0),
        "transformer.rotary_pos_emb.inv_freq": torch.ones(HEAD_DIM // 4),
    }
    for i in range(NUM_LAYERS):
        p = f"transformer.encoder.layers.{i}."
        weights |= {
            p + "input_layernorm.weight": rnd.norm(),
            p + "self_attention.query_key_value.weight": rnd.normal(qkv, HIDDEN),
            p + "self_attention.query_key_value.bias": rnd.normal(qkv),
            p + "self_attention.dense.weight": rnd.normal(HIDDEN, NUM_HEADS * HEAD_DIM),
            p + "post_attention_layernorm.weight": rnd.norm(),
            p + "mlp.dense_h_to_4h.weight": rnd.normal(2 * FFN, HIDDEN),
            p + "mlp.dense_4h_to_h.weight": rnd.normal(HIDDEN, FFN),
        }
        if post_norms:
            weights[p + "post_self_attn_layernorm.weight"] = rnd.norm()
            weights[p + "post_mlp_layernorm.weight"] = rnd.norm()
    weights["transformer.encoder.final_layernorm.weight"] = rnd.norm()
    weights["transformer.output_layer.weight"] = rnd.normal(vocab, HIDDEN)
    return weights


def to_hf_names(weights: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Original v2+ names -> transformers' Glm/Glm4 names (the fused qkv split in three)."""
    sizes = [NUM_HEADS * HEAD_DIM, NUM_KV_HEADS * HEAD_DIM, NUM_KV_HEADS * HEAD_DIM]
    renames = {
        "self_attention.dense.weight": "self_attn.o_proj.weight",
        "mlp.dense_h_to_4h.weight": "mlp.gate_up_proj.weight",
        "mlp.dense_4h_to_h.weight": "mlp.down_proj.weight",
    }
    out = {
        "model.embed_tokens.weight": weights["transformer.embedding.word_embeddings.weight"],
        "model.norm.weight": weights["transformer.encoder.final_layernorm.weight"],
        "lm_head.weight": weights["transformer.output_layer.weight"],
    }
    for name, tensor in weights.items():
        if not name.startswith("transformer.encoder.layers."):
            continue
        layer, rest = name.removeprefix("transformer.encoder.layers.").split(".", 1)
        p = f"model.layers.{layer}."
        if rest.startswith("self_attention.query_key_value."):
            kind = rest.rsplit(".", 1)[1]
            for proj, part in zip(("q", "k", "v"), tensor.split(sizes), strict=True):
                out[f"{p}self_attn.{proj}_proj.{kind}"] = part.clone()
        else:
            out[p + renames.get(rest, rest)] = tensor
    return out


def checkpoint_weights(layout: str, seed: int = 0) -> dict[str, torch.Tensor]:
    """The float32 weights of `layout`'s tiny checkpoint, under the checkpoint's own names."""
    rnd = _Random(seed)
    if layout == "chatglm-6b":
        return _v1_weights(130528, rnd)
    vocab = 65024 if layout in ("chatglm2", "chatglm3") else 151552
    weights = _v2_weights(vocab, rnd, post_norms=layout == "glm4-0414")
    return to_hf_names(weights) if layout in ("glm4-hf", "glm4-0414") else weights


def _save(weights: dict[str, torch.Tensor], folder: Path, fmt: str, num_shards: int) -> None:
    names = list(weights)
    if num_shards == 1:
        groups, files = (
            [names],
            ["model.safetensors" if fmt == "safetensors" else "pytorch_model.bin"],
        )
    else:
        groups = [names[i::num_shards] for i in range(num_shards)]
        stem, ext = ("model", "safetensors") if fmt == "safetensors" else ("pytorch_model", "bin")
        files = [f"{stem}-{i + 1:05d}-of-{num_shards:05d}.{ext}" for i in range(num_shards)]
        weight_map = {
            name: file for group, file in zip(groups, files, strict=True) for name in group
        }
        total = sum(t.numel() * t.element_size() for t in weights.values())
        index = {"metadata": {"total_size": total}, "weight_map": weight_map}
        (folder / f"{stem}.{ext}.index.json").write_text(json.dumps(index))
    for group, file in zip(groups, files, strict=True):
        shard = {name: weights[name].contiguous() for name in group}
        if fmt == "safetensors":
            save_file(shard, str(folder / file), metadata={"format": "pt"})
        else:
            torch.save(shard, folder / file)


def _copy_tokenizer(layout: str, folder: Path, assets: Path) -> None:
    source = assets / "tokenizers" / _ASSET_FOLDER[layout]
    for name in (*_TOKENIZER_FILES, "generation_config.json"):
        if (source / name).is_file():
            shutil.copy(source / name, folder / name)
    if layout in ("glm4-hf", "glm4-0414"):
        tokenizer_model = folder / "tokenizer.model"
        shutil.copy(_glm4_tokenizer_json(tokenizer_model), folder / "tokenizer.json")
        tokenizer_model.unlink()  # the -hf checkpoints ship tokenizer.json only
        template = "glm-4-0414.jinja" if layout == "glm4-0414" else "glm-4-9b-chat.jinja"
        shutil.copy(_TEMPLATES / template, folder / "chat_template.jinja")


_TOKENIZER_JSON: dict[str, Path] = {}  # built once per process (about 4 s, 20 MB)


def _glm4_tokenizer_json(tokenizer_model: Path) -> Path:
    key = hashlib.sha256(tokenizer_model.read_bytes()).hexdigest()
    if key not in _TOKENIZER_JSON:
        from glm_api.formats.glm4_hf import write_tokenizer_json

        out_dir = Path(tempfile.mkdtemp(prefix="glm4-tokenizer-json-"))
        _TOKENIZER_JSON[key] = write_tokenizer_json(tokenizer_model, out_dir)
    return _TOKENIZER_JSON[key]


def write_checkpoint(
    layout: str,
    out_dir: Path,
    assets: Path,
    *,
    weight_format: str = "safetensors",
    num_shards: int = 1,
    seed: int = 0,
    dtype: torch.dtype = torch.float32,
    with_tokenizer: bool = True,
) -> Path:
    """Write `layout`'s tiny checkpoint into `out_dir` (created) and return it.

    weight_format: "safetensors" or "bin"; num_shards > 1 writes an index file as well.
    with_tokenizer=False leaves the tokenizer files out (the -hf layouts need
    `glm_api.formats.glm4_hf.write_tokenizer_json` for theirs).
    """
    if layout not in LAYOUTS:
        raise ValueError(f"unknown layout {layout!r}; expected one of {LAYOUTS}")
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "config.json").write_text(json.dumps(config_json(layout, assets), indent=2))
    weights = {name: t.to(dtype) for name, t in checkpoint_weights(layout, seed).items()}
    _save(weights, out_dir, weight_format, num_shards)
    if with_tokenizer:
        _copy_tokenizer(layout, out_dir, assets)
    return out_dir


def write_prefix_checkpoint(
    out_file: Path,
    num_layers: int,
    kv_width: int,
    pre_seq_len: int = 4,
    seed: int = 1,
    projection_in: int | None = None,
) -> Path:
    """A P-tuning v2 `pytorch_model.bin`: `transformer.prefix_encoder.*`.

    kv_width: num_kv_heads * head_dim of the model (ChatGLM-6B: its hidden size).
    projection_in: None for the plain prefix; else `prefix_projection` as the official code
    stores it: an embedding of that width (ChatGLM2+: the kv size, ChatGLM-6B: the hidden
    size) and `trans` = Linear(projection_in, HIDDEN), Tanh, Linear(HIDDEN, kv size).
    """
    rnd = _Random(seed)
    kv_size = num_layers * 2 * kv_width
    prefix = "transformer.prefix_encoder."
    if projection_in is None:
        tensors = {prefix + "embedding.weight": rnd.normal(pre_seq_len, kv_size, std=0.5)}
    else:
        tensors = {
            prefix + "embedding.weight": rnd.normal(pre_seq_len, projection_in, std=0.5),
            prefix + "trans.0.weight": rnd.normal(HIDDEN, projection_in, std=0.3),
            prefix + "trans.0.bias": rnd.normal(HIDDEN, std=0.1),
            prefix + "trans.2.weight": rnd.normal(kv_size, HIDDEN, std=0.3),
            prefix + "trans.2.bias": rnd.normal(kv_size, std=0.1),
        }
    out_file.parent.mkdir(parents=True, exist_ok=True)
    torch.save(tensors, out_file)
    return out_file
