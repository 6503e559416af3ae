"""The BERT encoder (Devlin et al., 2019) that every served embedding model runs on.

Owns the architecture (embeddings, post-LN transformer layers, padding mask) and loading its
weights from a Hugging Face BERT checkpoint (`model.safetensors` or `pytorch_model.bin`) by
parameter name. Tokenization, pooling and model folders live elsewhere in this package.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, fields
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

_ACTIVATIONS = {
    "gelu": lambda x: F.gelu(x),  # BERT's exact erf form
    "gelu_new": lambda x: F.gelu(x, approximate="tanh"),
    "gelu_pytorch_tanh": lambda x: F.gelu(x, approximate="tanh"),
    "relu": F.relu,
}
#: weights a BERT checkpoint may carry that an encoder does not use
_UNUSED_PREFIXES = ("pooler.", "cls.", "embeddings.position_ids")


@dataclass(slots=True)
class BertConfig:
    """The fields of a BERT `config.json` the encoder needs."""

    vocab_size: int
    hidden_size: int
    num_hidden_layers: int
    num_attention_heads: int
    intermediate_size: int
    max_position_embeddings: int
    type_vocab_size: int = 2
    layer_norm_eps: float = 1e-12
    hidden_act: str = "gelu"
    pad_token_id: int = 0

    @classmethod
    def from_file(cls, path: Path) -> BertConfig:
        raw = json.loads(path.read_text(encoding="utf-8"))
        kind = raw.get("position_embedding_type", "absolute")
        if kind != "absolute":
            raise ValueError(f"{path}: position_embedding_type {kind!r} is not supported")
        if raw.get("hidden_act", "gelu") not in _ACTIVATIONS:
            raise ValueError(f"{path}: hidden_act {raw['hidden_act']!r} is not supported")
        names = {field.name for field in fields(cls)}
        # null entries (e.g. "pad_token_id": null) mean "the default"
        return cls(**{k: v for k, v in raw.items() if k in names and v is not None})


class BertEmbeddings(nn.Module):
    def __init__(self, config: BertConfig):
        super().__init__()
        self.word_embeddings = nn.Embedding(config.vocab_size, config.hidden_size)
        self.position_embeddings = nn.Embedding(config.max_position_embeddings, config.hidden_size)
        self.token_type_embeddings = nn.Embedding(config.type_vocab_size, config.hidden_size)
        self.LayerNorm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)

    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
        positions = torch.arange(input_ids.shape[1], device=input_ids.device)  # (seq,)
        # single-segment inputs: every token has token type 0
        x = (
            self.word_embeddings(input_ids)
            + self.position_embeddings(positions)[None]
            + self.token_type_embeddings.weight[0]
        )  # (batch, seq, hidden)
        return self.LayerNorm(x)


class BertSelfAttention(nn.Module):
    def __init__(self, config: BertConfig):
        super().__init__()
        self.num_heads = config.num_attention_heads
        self.query = nn.Linear(config.hidden_size, config.hidden_size)
        self.key = nn.Linear(config.hidden_size, config.hidden_size)
        self.value = nn.Linear(config.hidden_size, config.hidden_size)

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        batch, seq, hidden = x.shape
        head_dim = hidden // self.num_heads

        def heads(t: torch.Tensor) -> torch.Tensor:
            return t.view(batch, seq, self.num_heads, head_dim).transpose(1, 2)

        q, k, v = heads(self.query(x)), heads(self.key(x)), heads(self.value(x))
        # (batch, heads, seq, head_dim); mask (batch, 1, 1, seq) hides padded keys
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, scale=1 / math.sqrt(head_dim))
        return out.transpose(1, 2).reshape(batch, seq, hidden)


class BertSelfOutput(nn.Module):
    """A projection, then residual + LayerNorm (post-LN) -- also the feed-forward's output."""

    def __init__(self, in_size: int, config: BertConfig):
        super().__init__()
        self.dense = nn.Linear(in_size, config.hidden_size)
        self.LayerNorm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)

    def forward(self, x: torch.Tensor, residual: torch.Tensor) -> torch.Tensor:
        return self.LayerNorm(self.dense(x) + residual)


class BertAttention(nn.Module):
    def __init__(self, config: BertConfig):
        super().__init__()
        self.self = BertSelfAttention(config)
        self.output = BertSelfOutput(config.hidden_size, config)

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        return self.output(self.self(x, mask), x)


class BertIntermediate(nn.Module):
    def __init__(self, config: BertConfig):
        super().__init__()
        self.dense = nn.Linear(config.hidden_size, config.intermediate_size)
        self.act = _ACTIVATIONS[config.hidden_act]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.dense(x))


class BertLayer(nn.Module):
    def __init__(self, config: BertConfig):
        super().__init__()
        self.attention = BertAttention(config)
        self.intermediate = BertIntermediate(config)
        self.output = BertSelfOutput(config.intermediate_size, config)

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        x = self.attention(x, mask)
        return self.output(self.intermediate(x), x)


class BertEncoderStack(nn.Module):
    def __init__(self, config: BertConfig):
        super().__init__()
        self.layer = nn.ModuleList(BertLayer(config) for _ in range(config.num_hidden_layers))


class BertEncoder(nn.Module):
    """input ids + attention mask -> last hidden states. Parameter names match `BertModel`."""

    def __init__(self, config: BertConfig):
        super().__init__()
        self.config = config
        self.embeddings = BertEmbeddings(config)
        self.encoder = BertEncoderStack(config)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """(batch, seq) ids and 1/0 mask -> (batch, seq, hidden); padded rows are garbage."""
        keep = attention_mask.bool()[:, None, None, :]  # (batch, 1, 1, seq)
        x = self.embeddings(input_ids)
        for layer in self.encoder.layer:
            x = layer(x, keep)
        return x


def _canonical_name(name: str) -> str:
    """Checkpoint name -> our name: drop a `bert.` prefix, old TF-era gamma/beta names."""
    name = name.removeprefix("bert.")
    if name.endswith("LayerNorm.gamma"):
        return name.removesuffix("gamma") + "weight"
    if name.endswith("LayerNorm.beta"):
        return name.removesuffix("beta") + "bias"
    return name


def read_checkpoint(folder: Path) -> dict[str, torch.Tensor]:
    """All tensors of `model.safetensors` (preferred) or `pytorch_model.bin` in `folder`."""
    if (folder / "model.safetensors").is_file():
        from safetensors.torch import load_file

        return load_file(str(folder / "model.safetensors"), device="cpu")
    if (folder / "pytorch_model.bin").is_file():
        loaded = torch.load(folder / "pytorch_model.bin", map_location="cpu", weights_only=True)
        return dict(loaded)
    raise FileNotFoundError(f"{folder} has neither model.safetensors nor pytorch_model.bin")


def load_bert_encoder(folder: Path) -> BertEncoder:
    """Build the encoder from `folder/config.json` and fill every parameter by name (float32)."""
    encoder = BertEncoder(BertConfig.from_file(folder / "config.json"))
    params = encoder.state_dict()
    found: dict[str, torch.Tensor] = {}
    unexpected = []
    for name, tensor in read_checkpoint(folder).items():
        ours = _canonical_name(name)
        if ours in params:
            found[ours] = tensor
        elif not ours.startswith(_UNUSED_PREFIXES):
            unexpected.append(name)
    missing = sorted(set(params) - set(found))
    if missing or unexpected:
        raise ValueError(
            f"{folder}: checkpoint does not match a BERT encoder; "
            f"missing weights: {missing or 'none'}; unexpected weights: {unexpected or 'none'}"
        )
    for name, tensor in found.items():
        if tensor.shape != params[name].shape:
            raise ValueError(
                f"{folder}: weight {name} has shape {tuple(tensor.shape)}, "
                f"config.json asks for {tuple(params[name].shape)}"
            )
    encoder.load_state_dict({k: v.float() for k, v in found.items()})
    return encoder.eval()
