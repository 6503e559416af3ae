"""Incremental detokenisation shared by every format.

Owns the two decoders the engine streams text with: `ByteTableDecoder` for tokenizers whose
ids map to fixed byte strings (sentencepiece with byte fallback, tiktoken BPE, the demo's
byte vocabulary) and `WindowDecoder` for tokenizers only reachable through a `decode()` call
(`tokenizers` BPE). Neither ever emits a partial multi-byte character. Prompt rules and
tool parsing do not belong here.
"""

from __future__ import annotations

import codecs
from collections.abc import Callable, Sequence
from typing import Any

from glm_api.formats.base import IncrementalDecoder

_REPLACEMENT = "\ufffd"


class ByteTableDecoder(IncrementalDecoder):
    """Joins the bytes of each id and lets `codecs` hold back unfinished UTF-8 sequences.

    State is O(1): at most three pending bytes, so a step costs only its own ids.
    `strip_leading` reproduces sentencepiece's rule that every piece seen before any text
    loses one leading space (the dummy prefix `▁`); `spaced` names the ids that may lose it.
    `restart_ids` (ChatGLM2/3's added specials, shown when not skipped) start that rule
    again, as their tokenizers decode the pieces between specials separately.
    """

    def __init__(
        self,
        table: Sequence[bytes],
        skip_ids: frozenset[int],
        strip_leading: bool = False,
        spaced: frozenset[int] = frozenset(),
        restart_ids: frozenset[int] = frozenset(),
    ) -> None:
        self._table = table
        self._strip_leading = strip_leading
        self._restart_ids = restart_ids
        self._skip_ids = skip_ids
        self._at_start = strip_leading
        self._spaced = spaced
        self._utf8 = codecs.getincrementaldecoder("utf-8")(errors="replace")

    def _bytes(self, new_ids: Sequence[int]) -> bytes:
        parts: list[bytes] = []
        for token_id in new_ids:
            if token_id in self._skip_ids or not 0 <= token_id < len(self._table):
                continue
            piece = self._table[token_id]
            if self._at_start:
                if token_id in self._spaced and piece.startswith(b" "):
                    piece = piece[1:]
                self._at_start = not piece
            if token_id in self._restart_ids:
                self._at_start = self._strip_leading
            parts.append(piece)
        return b"".join(parts)

    def step(self, new_ids: Sequence[int]) -> str:
        return self._utf8.decode(self._bytes(new_ids))

    def flush(self) -> str:
        return self._utf8.decode(b"", final=True)


def decode_table(
    table: Sequence[bytes],
    ids: Sequence[int],
    skip_ids: frozenset[int],
    strip_leading: bool = False,
    spaced: frozenset[int] = frozenset(),
    restart_ids: frozenset[int] = frozenset(),
) -> str:
    """Whole-sequence decode with exactly the rules of `ByteTableDecoder` (deltas add up)."""
    decoder = ByteTableDecoder(table, skip_ids, strip_leading, spaced, restart_ids)
    return decoder.step(ids) + decoder.flush()


class WindowDecoder(IncrementalDecoder):
    """Decodes a small window of ids per step (the prefix/read offsets of TGI and vLLM).

    The text of `ids[prefix:read]` was already emitted; the delta is what decoding
    `ids[prefix:]` adds to it, held back while it still ends in U+FFFD (an unfinished
    character). After each emission the window slides, so a step decodes a few ids only.
    """

    def __init__(self, decode: Callable[[list[int]], str]) -> None:
        self._decode = decode
        self._ids: list[int] = []
        self._prefix = 0
        self._read = 0

    def _delta(self, final: bool) -> str:
        prefix_text = self._decode(self._ids[self._prefix : self._read])
        text = self._decode(self._ids[self._prefix :])
        if len(text) <= len(prefix_text) or (text.endswith(_REPLACEMENT) and not final):
            return ""
        self._prefix, self._read = self._read, len(self._ids)
        return text[len(prefix_text) :]

    def step(self, new_ids: Sequence[int]) -> str:
        self._ids.extend(new_ids)
        return self._delta(final=False)

    def flush(self) -> str:
        return self._delta(final=True)


def sentencepiece_table(
    sp: Any, replacements: dict[str, str] | None = None
) -> tuple[list[bytes], frozenset[int], frozenset[int]]:
    """(bytes per id, ids that start with `▁`, control ids) of a SentencePieceProcessor.

    Byte-fallback pieces `<0xE4>` become their byte, `▁` becomes a space, `<unk>` reads
    " ⁇ " as sentencepiece prints it, and `replacements` maps whole pieces to text (the v1
    tokenizer's `<n>`, `<|tab|>`, `<|blank_N|>`). Built once per format instance.
    """
    replacements = replacements or {}
    table: list[bytes] = []
    spaced: set[int] = set()
    control: set[int] = set()
    for token_id in range(sp.get_piece_size()):
        piece: str = sp.id_to_piece(token_id)
        if sp.is_byte(token_id):
            table.append(bytes([int(piece[3:5], 16)]))
            continue
        if sp.is_control(token_id):
            control.add(token_id)
            table.append(piece.encode())
            continue
        if sp.is_unknown(token_id):
            table.append(" \u2047 ".encode())
            continue
        if piece.startswith("\u2581"):
            spaced.add(token_id)
        text = replacements.get(piece, piece.replace("\u2581", " "))
        table.append(text.encode())
    return table, frozenset(spaced), frozenset(control)
