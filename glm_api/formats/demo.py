"""The demo format: a byte-level tokenizer made in code, with GLM-4's specials and prompts.

Backs the demo model (a tiny random GLM-4) so the API can be tried with no files at all:
ids 0..255 are the bytes of the UTF-8 text, then GLM-4's special tokens. Nothing here
reads a file.
"""

from __future__ import annotations

from glm_api.formats.glm4 import Glm4StyleFormat

#: GLM-4's specials without the image/video markers, numbered from 256.
DEMO_SPECIAL_NAMES = (
    "<|endoftext|>",
    "[MASK]",
    "[gMASK]",
    "[sMASK]",
    "<sop>",
    "<eop>",
    "<|system|>",
    "<|user|>",
    "<|assistant|>",
    "<|observation|>",
)


class DemoFormat(Glm4StyleFormat):
    """Byte ids + GLM-4 specials; `vocab_size` = 256 + 10."""

    name = "demo"

    def __init__(self) -> None:
        self.special_tokens = {name: 256 + i for i, name in enumerate(DEMO_SPECIAL_NAMES)}
        self._table = [bytes([b]) for b in range(256)] + [n.encode() for n in DEMO_SPECIAL_NAMES]
        self._skip_ids = frozenset(self.special_tokens.values())
        self.vocab_size = len(self._table)
        self._init_glm4()

    def encode_ordinary(self, text: str) -> list[int]:
        return list(text.encode("utf-8"))

    def encode_pieces(self, text: str) -> list[str]:
        return [self.id_to_piece(i) for i in self.encode_ordinary(text)]
