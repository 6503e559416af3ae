"""One served embedding model: tokenizer + BERT encoder + pooling + normalisation.

Owns input checks that depend on the model (length limit, vocabulary range, truncation) and
the batched forward: padded id lists in, one float32 vector per sequence out. Request
batching across callers and the worker thread belong to service.py.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F

from glm_api.embeddings.base import EmbeddingModelInfo
from glm_api.embeddings.bert import BertEncoder, load_bert_encoder
from glm_api.embeddings.folder import FolderConfig, read_folder_config
from glm_api.embeddings.pooling import pool
from glm_api.embeddings.tokenizer import WordPieceTokenizer
from glm_api.engine.errors import InvalidRequestError


@dataclass(slots=True)
class EmbeddingModel:
    name: str
    encoder: BertEncoder
    tokenizer: WordPieceTokenizer
    folder_config: FolderConfig
    max_input_tokens: int  # with [CLS]/[SEP]

    @classmethod
    def load(cls, name: str, folder: Path) -> EmbeddingModel:
        folder_config = read_folder_config(folder)
        encoder = load_bert_encoder(folder_config.encoder_folder)
        max_input_tokens = encoder.config.max_position_embeddings
        if folder_config.max_seq_length is not None:
            max_input_tokens = min(max_input_tokens, folder_config.max_seq_length)
        return cls(
            name,
            encoder,
            WordPieceTokenizer.from_folder(folder_config.encoder_folder),
            folder_config,
            max_input_tokens,
        )

    @property
    def dimension(self) -> int:
        return self.encoder.config.hidden_size * len(self.folder_config.pooling)

    def info(self) -> EmbeddingModelInfo:
        return EmbeddingModelInfo(
            name=self.name,
            dimension=self.dimension,
            max_input_tokens=self.max_input_tokens,
            is_normalized=self.folder_config.is_normalized,
            can_shorten=self.folder_config.can_shorten,
            languages=self.folder_config.languages,
            pooling="+".join(mode.value for mode in self.folder_config.pooling),
        )

    def prepare(self, inputs: list[str] | list[list[int]], truncate: bool) -> list[list[int]]:
        """Texts or bare token-id lists -> wrapped id lists within the length limit."""
        if all(isinstance(item, str) for item in inputs):
            sequences = self.tokenizer.encode_texts(inputs)  # type: ignore[arg-type]
        else:
            sequences = [self._wrap_checked(item, index) for index, item in enumerate(inputs)]
        return [self._fit(ids, index, truncate) for index, ids in enumerate(sequences)]

    def _wrap_checked(self, ids: object, index: int) -> list[int]:
        if not isinstance(ids, list) or not all(
            isinstance(i, int) and not isinstance(i, bool) for i in ids
        ):
            raise InvalidRequestError(
                f"input[{index}] must be a string or a list of token ids, like the other inputs",
                param="input",
            )
        bad = [i for i in ids if not 0 <= i < self.tokenizer.vocab_size]
        if bad:
            raise InvalidRequestError(
                f"input[{index}] holds token id {bad[0]}, outside the vocabulary of model "
                f"{self.name!r} (0..{self.tokenizer.vocab_size - 1})",
                param="input",
            )
        return self.tokenizer.wrap_ids(ids)

    def _fit(self, ids: list[int], index: int, truncate: bool) -> list[int]:
        if len(ids) <= self.max_input_tokens:
            return ids
        if not truncate:
            raise InvalidRequestError(
                f"input[{index}] has {len(ids)} tokens, more than the {self.max_input_tokens} "
                f"model {self.name!r} accepts; shorten it or set truncate",
                param="input",
                code="context_length_exceeded",
            )
        # keep the special tokens, cut the text from the end (as sentence-transformers does)
        num_suffix = len(self.tokenizer.suffix_ids)
        head = ids[: self.max_input_tokens - num_suffix]
        return head + ids[len(ids) - num_suffix :]

    def embed_ids(self, sequences: list[list[int]]) -> torch.Tensor:
        """Wrapped id lists -> (len(sequences), dimension) float32 vectors, one forward."""
        max_len = max(len(ids) for ids in sequences)
        pad_id = self.encoder.config.pad_token_id
        input_ids = torch.full((len(sequences), max_len), pad_id, dtype=torch.long)  # (batch, seq)
        mask = torch.zeros((len(sequences), max_len), dtype=torch.long)  # (batch, seq)
        for row, ids in enumerate(sequences):
            input_ids[row, : len(ids)] = torch.tensor(ids, dtype=torch.long)
            mask[row, : len(ids)] = 1
        with torch.inference_mode():
            hidden = self.encoder(input_ids, mask)  # (batch, seq, hidden)
            vectors = pool(hidden, mask, self.folder_config.pooling)  # (batch, dimension)
            if self.folder_config.is_normalized:
                vectors = F.normalize(vectors, p=2, dim=-1)
        return vectors.float()
