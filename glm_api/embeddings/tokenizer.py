"""WordPiece tokenization for the embedding models, through the `tokenizers` package.

Owns text -> ids (with the model's [CLS]/[SEP] wrapping) and the wrapping of caller-given
ids. `tokenizer.json` wins when present; otherwise `vocab.txt` with `do_lower_case` from
`tokenizer_config.json`. Length limits and truncation policy belong to the model (model.py).
"""

from __future__ import annotations

import json
from pathlib import Path

from tokenizers import Tokenizer
from tokenizers.implementations import BertWordPieceTokenizer

_PROBE = "a"  # any text that tokenizes to real tokens; used to find the special-token wrapping


class WordPieceTokenizer:
    """Texts -> id lists that start with [CLS] and end with [SEP], never truncated or padded."""

    def __init__(self, tokenizer: Tokenizer):
        self._tokenizer = tokenizer
        # the files may ask for truncation/padding (MiniLM's tokenizer.json pads to 128);
        # limits are applied by the model, so the tokenizer must return whole sequences
        self._tokenizer.no_truncation()
        self._tokenizer.no_padding()
        self.prefix_ids, self.suffix_ids = self._find_wrapping()
        self.vocab_size = tokenizer.get_vocab_size(with_added_tokens=True)

    @classmethod
    def from_folder(cls, folder: Path) -> WordPieceTokenizer:
        if (folder / "tokenizer.json").is_file():
            return cls(Tokenizer.from_file(str(folder / "tokenizer.json")))
        if not (folder / "vocab.txt").is_file():
            raise FileNotFoundError(f"{folder} has neither tokenizer.json nor vocab.txt")
        settings = {}
        if (folder / "tokenizer_config.json").is_file():
            settings = json.loads((folder / "tokenizer_config.json").read_text(encoding="utf-8"))
        wordpiece = BertWordPieceTokenizer(
            str(folder / "vocab.txt"),
            lowercase=bool(settings.get("do_lower_case", True)),  # BertTokenizer's default
            strip_accents=settings.get("strip_accents"),
            handle_chinese_chars=bool(settings.get("tokenize_chinese_chars", True)),
        )
        return cls(wordpiece._tokenizer)

    def _find_wrapping(self) -> tuple[list[int], list[int]]:
        """The special ids the post-processor puts before and after a single sequence."""
        bare = self._tokenizer.encode(_PROBE, add_special_tokens=False).ids
        wrapped = self._tokenizer.encode(_PROBE, add_special_tokens=True).ids
        for start in range(len(wrapped) - len(bare) + 1):
            if wrapped[start : start + len(bare)] == bare:
                return wrapped[:start], wrapped[start + len(bare) :]
        raise ValueError("tokenizer's special-token template does not wrap the text it is given")

    def encode_texts(self, texts: list[str]) -> list[list[int]]:
        """Each text -> [CLS] ids... [SEP]."""
        return [encoding.ids for encoding in self._tokenizer.encode_batch(texts)]

    def wrap_ids(self, ids: list[int]) -> list[int]:
        """Caller-given token ids (no special tokens) -> [CLS] ids... [SEP]."""
        return [*self.prefix_ids, *ids, *self.suffix_ids]

    def encode_bare(self, text: str) -> list[int]:
        """Text -> ids without special tokens: what a caller would send as token-id input."""
        return list(self._tokenizer.encode(text, add_special_tokens=False).ids)
