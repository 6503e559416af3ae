"""Write the benchmark checkpoint: GLM-4-9B-chat's architecture at about 0.6B parameters.

    python bench/make_checkpoint.py [OUT_DIR] [--tiny] [--seed 0]

OUT_DIR (default bench/checkpoints/glm4-0.6b, or bench/checkpoints/glm4-tiny with --tiny)
gets the same random weights (float32, std 0.02, fixed seed) in two layouts:

- `OUT_DIR/hf`: the GLM-4-9B-chat-hf layout (transformers `GlmForCausalLM`, model_type
  "glm"): config.json, generation_config.json, model.safetensors, tokenizer.json (made from
  the real tiktoken file) and tokenizer_config.json with the chat template, so that every
  transformers-based server (transformers serve, vLLM) loads it as it would the real model;
- `OUT_DIR/original`: the original THUDM/glm-4-9b-chat layout (model_type "chatglm", fused
  query_key_value, the tiktoken `tokenizer.model`).

Random weights make random text, but the end-of-sequence ids are 3 of 151,552, so every
request runs to max_tokens and all servers do the same work. This script only writes files;
it needs torch, safetensors, transformers (for tokenizer.json) and the shared assets.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors.torch import save_file

ROOT = Path(__file__).resolve().parents[1]
ASSETS = ROOT.parent / "shared" / "assets" / "tokenizers" / "glm-4-9b-chat"
VOCAB = 151552  # GLM-4's padded embedding rows: every tokenizer id is valid
EOS_IDS = [151329, 151336, 151338]  # <|endoftext|>, <|user|>, <|observation|>
ROPE_RATIO = 500  # GLM-4-9B-chat's; the -hf config says rope_theta = 10000 * 500
#: GLM-4-9B-chat's chat template (its tokenizer_config.json) with only the `function` tool
#: branch kept: the benchmark sends no tools, and the prompt ids are the model's own.
CHAT_TEMPLATE = (
    "[gMASK]<sop>{% for item in messages %}{% if item['tools'] is defined %}<|system|>\n"
    "你是一个名为 ChatGLM 的人工智能助手。你是基于智谱AI训练的语言模型 GLM-4 模型开发的，"
    "你的任务是针对用户的问题和要求提供适当的答复和支持。\n\n# 可用工具"
    "{% set tools = item['tools'] %}{% for tool in tools %}{% if tool['type'] == 'function' %}"
    "\n\n## {{ tool['function']['name'] }}\n\n{{ tool['function'] | tojson(indent=4) }}\n"
    "在调用上述函数时，请使用 Json 格式表示调用的参数。{% endif %}{% endfor %}{% endif %}"
    "{% if item['content'] %}<|{{ item['role'] }}|>{{ item['metadata'] }}\n"
    "{{ item['content'] }}{% endif %}{% endfor %}"
    "{% if add_generation_prompt %}<|assistant|>{% endif %}"
)
SPLIT_PATTERN = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}"
    r"| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"
)  # GLM-4's tiktoken split pattern
SPECIAL_NAMES = [
    "<|endoftext|>", "[MASK]", "[gMASK]", "[sMASK]", "<sop>", "<eop>", "<|system|>",
    "<|user|>", "<|assistant|>", "<|observation|>", "<|begin_of_image|>", "<|end_of_image|>",
    "<|begin_of_video|>", "<|end_of_video|>",
]  # fmt: skip


@dataclass(slots=True, frozen=True)
class Shape:
    hidden: int
    num_layers: int
    num_heads: int
    num_kv_heads: int
    head_dim: int
    ffn: int


FULL = Shape(hidden=1024, num_layers=24, num_heads=8, num_kv_heads=2, head_dim=128, ffn=2816)
TINY = Shape(hidden=64, num_layers=2, num_heads=4, num_kv_heads=2, head_dim=64, ffn=128)
# head_dim 64, not 16: vLLM's CPU attention kernels take head sizes 32, 64, 80, 96, 112, 128, ...


def original_weights(shape: Shape, seed: int) -> dict[str, torch.Tensor]:
    """float32 weights under THUDM/glm-4-9b-chat's names (fused qkv, gate|up stacked)."""
    gen = torch.Generator().manual_seed(seed)

    def normal(*size: int) -> torch.Tensor:
        return torch.randn(size, generator=gen) * 0.02

    qkv_rows = (shape.num_heads + 2 * shape.num_kv_heads) * shape.head_dim
    rotary_dim = shape.head_dim // 2  # GLM rotates half of each head (partial_rotary 0.5)
    weights = {
        "transformer.embedding.word_embeddings.weight": normal(VOCAB, shape.hidden),
        # stored by the original checkpoints, recomputed by their code: (rotary_dim // 2,)
        "transformer.rotary_pos_emb.inv_freq": 1.0
        / (10000 ** (torch.arange(0, rotary_dim, 2, dtype=torch.float32) / rotary_dim)),
    }
    for i in range(shape.num_layers):
        p = f"transformer.encoder.layers.{i}."
        weights |= {
            p + "input_layernorm.weight": torch.ones(shape.hidden),
            p + "self_attention.query_key_value.weight": normal(qkv_rows, shape.hidden),
            p + "self_attention.query_key_value.bias": normal(qkv_rows),
            p + "self_attention.dense.weight": normal(
                shape.hidden, shape.num_heads * shape.head_dim
            ),
            p + "post_attention_layernorm.weight": torch.ones(shape.hidden),
            p + "mlp.dense_h_to_4h.weight": normal(2 * shape.ffn, shape.hidden),
            p + "mlp.dense_4h_to_h.weight": normal(shape.hidden, shape.ffn),
        }
    weights["transformer.encoder.final_layernorm.weight"] = torch.ones(shape.hidden)
    weights["transformer.output_layer.weight"] = normal(VOCAB, shape.hidden)
    return weights


def to_hf(weights: dict[str, torch.Tensor], shape: Shape) -> dict[str, torch.Tensor]:
    """Original names -> transformers' GlmForCausalLM names (qkv split into q, k, v)."""
    sizes = [shape.num_heads * shape.head_dim] + [shape.num_kv_heads * shape.head_dim] * 2
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
        prefix = f"model.layers.{layer}."
        if rest.startswith("self_attention.query_key_value."):
            kind = rest.rsplit(".", 1)[1]
            for proj, part in zip("qkv", tensor.split(sizes), strict=True):
                out[f"{prefix}self_attn.{proj}_proj.{kind}"] = part.clone()  # no shared storage
        else:
            out[prefix + renames.get(rest, rest)] = tensor
    return out


def hf_config(shape: Shape) -> dict[str, object]:
    """config.json as THUDM/glm-4-9b-chat-hf writes it, at the benchmark's sizes."""
    return {
        "architectures": ["GlmForCausalLM"],
        "model_type": "glm",
        "vocab_size": VOCAB,
        "hidden_size": shape.hidden,
        "intermediate_size": shape.ffn,
        "num_hidden_layers": shape.num_layers,
        "num_attention_heads": shape.num_heads,
        "num_key_value_heads": shape.num_kv_heads,
        "head_dim": shape.head_dim,
        "hidden_act": "silu",
        "partial_rotary_factor": 0.5,
        "rope_theta": 10000.0 * ROPE_RATIO,
        "rms_norm_eps": 1.5625e-07,
        "attention_bias": True,
        "attention_dropout": 0.0,
        "initializer_range": 0.02,
        "max_position_embeddings": 131072,
        "pad_token_id": 151329,
        "eos_token_id": EOS_IDS,
        "tie_word_embeddings": False,
        "use_cache": True,
        "torch_dtype": "float32",
    }


def original_config(shape: Shape) -> dict[str, object]:
    """The real glm-4-9b-chat config.json with the benchmark's sizes put in."""
    raw = json.loads((ASSETS / "config.json").read_text())
    raw.update(
        hidden_size=shape.hidden,
        num_layers=shape.num_layers,
        num_hidden_layers=shape.num_layers,
        num_attention_heads=shape.num_heads,
        multi_query_group_num=shape.num_kv_heads,
        kv_channels=shape.head_dim,
        ffn_hidden_size=shape.ffn,
        padded_vocab_size=VOCAB,
        torch_dtype="float32",
    )
    return raw


def tokenizer_config() -> dict[str, object]:
    """What transformers' fast tokenizer needs next to tokenizer.json, with the template."""
    first = 151329
    added = {
        str(first + i): {
            "content": name, "lstrip": False, "normalized": False, "rstrip": False,
            "single_word": False, "special": True,
        }
        for i, name in enumerate(SPECIAL_NAMES)
    }  # fmt: skip
    return {
        "added_tokens_decoder": added,
        "additional_special_tokens": SPECIAL_NAMES,
        "chat_template": CHAT_TEMPLATE,
        "clean_up_tokenization_spaces": False,
        "do_lower_case": False,
        "eos_token": "<|endoftext|>",
        "pad_token": "<|endoftext|>",
        "model_max_length": 128000,
        "padding_side": "left",
        "remove_space": False,
        "tokenizer_class": "PreTrainedTokenizerFast",
    }


def write_tokenizer_json(out_dir: Path) -> None:
    """tokenizer.json from the tiktoken ranks (the project's converter when it is there)."""
    sys.path.insert(0, str(ROOT))  # run as a script from a checkout: glm_api may not be installed
    try:
        from glm_api.formats.glm4_hf import write_tokenizer_json as write
    except ImportError:
        from transformers.convert_slow_tokenizer import TikTokenConverter

        converter = TikTokenConverter(
            vocab_file=str(ASSETS / "tokenizer.model"),
            pattern=SPLIT_PATTERN,
            extra_special_tokens=SPECIAL_NAMES,
        )
        converter.converted().save(str(out_dir / "tokenizer.json"))
        return
    write(ASSETS / "tokenizer.model", out_dir)


def write_json(path: Path, data: object) -> None:
    path.write_text(json.dumps(data, indent=2, ensure_ascii=False) + "\n")


def write_checkpoint(out_dir: Path, shape: Shape, seed: int) -> None:
    weights = original_weights(shape, seed)
    num_params = sum(t.numel() for n, t in weights.items() if not n.endswith("inv_freq"))
    print(f"{num_params / 1e6:.1f}M parameters, {num_params * 4 / 1e9:.2f} GB float32")

    hf = out_dir / "hf"
    hf.mkdir(parents=True, exist_ok=True)
    write_json(hf / "config.json", hf_config(shape))
    generation = json.loads((ASSETS / "generation_config.json").read_text())
    write_json(hf / "generation_config.json", generation | {"eos_token_id": EOS_IDS})
    write_tokenizer_json(hf)
    write_json(hf / "tokenizer_config.json", tokenizer_config())
    save_file(to_hf(weights, shape), str(hf / "model.safetensors"), metadata={"format": "pt"})

    original = out_dir / "original"
    original.mkdir(parents=True, exist_ok=True)
    write_json(original / "config.json", original_config(shape))
    for name in ("generation_config.json", "tokenizer.model", "LICENSE"):
        shutil.copyfile(ASSETS / name, original / name)  # not the read-only mode
    save_file(weights, str(original / "model.safetensors"), metadata={"format": "pt"})
    print(f"wrote {hf} and {original}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out_dir", nargs="?", help="default bench/checkpoints/glm4-0.6b")
    parser.add_argument("--tiny", action="store_true", help="hidden 64, 2 layers: a smoke test")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    if not (ASSETS / "tokenizer.model").is_file():
        print(f"make_checkpoint: GLM-4 tokenizer assets not found at {ASSETS}", file=sys.stderr)
        return 1
    default = "glm4-tiny" if args.tiny else "glm4-0.6b"
    out_dir = Path(args.out_dir) if args.out_dir else ROOT / "bench" / "checkpoints" / default
    write_checkpoint(out_dir, TINY if args.tiny else FULL, args.seed)
    return 0


if __name__ == "__main__":
    sys.exit(main())
