"""Writers of tiny random BERT folders in the layouts we serve.

`write_text2vec_folder`: a plain BERT folder as text2vec-large-chinese ships it (config.json,
vocab.txt, tokenizer_config.json, `bert.`-prefixed pytorch_model.bin, no pooling config).
`write_bge_folder`: a sentence-transformers folder as bge models ship it (modules.json,
1_Pooling with cls, Normalize, tokenizer.json, plain-named model.safetensors).
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from safetensors.torch import save_file
from tokenizers.implementations import BertWordPieceTokenizer

from glm_api.embeddings.bert import BertConfig, BertEncoder

SPECIALS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
WORDS = ["the", "cat", "sat", "on", "mat", "dog", "ran", "bread", "bake", "how", "do", "i", "?"]
PIECES = ["##s", "##ing", "##ed"] + list("abcdefghijklmnopqrstuvwxyz") + ["中", "文"]
TINY_CONFIG = BertConfig(
    vocab_size=len(SPECIALS) + len(WORDS) + len(PIECES),
    hidden_size=32,
    num_hidden_layers=2,
    num_attention_heads=4,
    intermediate_size=64,
    max_position_embeddings=24,
)


def random_state_dict(seed: int) -> dict[str, torch.Tensor]:
    """Random BERT weights in checkpoint names; LayerNorms far from identity to test them."""
    torch.manual_seed(seed)
    encoder = BertEncoder(TINY_CONFIG)
    state = {}
    for name, tensor in encoder.state_dict().items():
        noise = torch.randn_like(tensor)
        state[name] = 1 + 0.2 * noise if name.endswith("LayerNorm.weight") else 0.2 * noise
    return state


def _write_common(folder: Path, seed: int) -> dict[str, torch.Tensor]:
    folder.mkdir(parents=True, exist_ok=True)
    config = {f: getattr(TINY_CONFIG, f) for f in TINY_CONFIG.__dataclass_fields__}
    config |= {"architectures": ["BertModel"], "model_type": "bert"}
    (folder / "config.json").write_text(json.dumps(config))
    (folder / "vocab.txt").write_text("\n".join(SPECIALS + WORDS + PIECES) + "\n")
    return random_state_dict(seed)


def write_text2vec_folder(folder: Path, seed: int = 0) -> Path:
    state = _write_common(folder, seed)
    (folder / "tokenizer_config.json").write_text(json.dumps({"do_lower_case": True}))
    checkpoint = {f"bert.{name}": tensor for name, tensor in state.items()}
    # weights a pretraining checkpoint carries that an encoder must skip
    checkpoint["bert.pooler.dense.weight"] = torch.zeros(32, 32)
    checkpoint["cls.predictions.bias"] = torch.zeros(TINY_CONFIG.vocab_size)
    torch.save(checkpoint, folder / "pytorch_model.bin")
    return folder


def write_bge_folder(folder: Path, seed: int = 1, matryoshka: bool = False) -> Path:
    state = _write_common(folder, seed)
    tokenizer = BertWordPieceTokenizer(str(folder / "vocab.txt"), lowercase=True)
    tokenizer.save(str(folder / "tokenizer.json"))
    (folder / "vocab.txt").unlink()  # tokenizer.json alone must be enough
    save_file(state, str(folder / "model.safetensors"))
    modules = [
        {"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"},
        {
            "idx": 1,
            "name": "1",
            "path": "1_Pooling",
            "type": "sentence_transformers.models.Pooling",
        },
        {
            "idx": 2,
            "name": "2",
            "path": "2_Normalize",
            "type": "sentence_transformers.models.Normalize",
        },
    ]
    (folder / "modules.json").write_text(json.dumps(modules))
    (folder / "1_Pooling").mkdir()
    pooling = {"word_embedding_dimension": 32, "pooling_mode_cls_token": True}
    pooling |= {"pooling_mode_mean_tokens": False, "pooling_mode_max_tokens": False}
    (folder / "1_Pooling" / "config.json").write_text(json.dumps(pooling))
    (folder / "sentence_bert_config.json").write_text(json.dumps({"max_seq_length": 16}))
    if matryoshka:
        st_config = {"matryoshka_dims": [32, 16, 8]}
        (folder / "config_sentence_transformers.json").write_text(json.dumps(st_config))
    return folder
