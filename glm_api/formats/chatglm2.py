"""ChatGLM2-6B: plain sentencepiece ids, `[gMASK] sop` in front, `[Round n]` prompts from 1.

Reproduces THUDM/chatglm2-6b's tokenization_chatglm.py and `build_prompt`. Also owns
`SentencePieceGLM`, the tokenizer half that ChatGLM3 shares (the two `tokenizer.model`
files are byte-identical; ChatGLM3 only adds four role tokens after the specials).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

import sentencepiece as spm

from glm_api.formats.base import ChatFormat, ChatMessage, IncrementalDecoder
from glm_api.formats.chatglm import _reject_tools, messages_to_query_history
from glm_api.formats.decoding import ByteTableDecoder, decode_table, sentencepiece_table

_SPECIAL_NAMES = ("[MASK]", "[gMASK]", "[sMASK]", "sop", "eop")


class SentencePieceGLM(ChatFormat):
    """Sentencepiece ids, then the generation's specials numbered after the last piece."""

    def __init__(self, folder: str | os.PathLike[str], special_names: Sequence[str]) -> None:
        self._sp = spm.SentencePieceProcessor(model_file=os.path.join(folder, "tokenizer.model"))
        num_pieces = self._sp.get_piece_size()
        table, self._spaced, control = sentencepiece_table(self._sp)
        self.special_tokens = {name: num_pieces + i for i, name in enumerate(special_names)}
        self._table = table + [name.encode() for name in special_names]
        self._restart_ids = frozenset(self.special_tokens.values())
        self.special_tokens["</s>"] = self._sp.eos_id()
        self.vocab_size = len(self._table)
        self._skip_ids = control | frozenset(self.special_tokens.values())
        self._prefix = [self.special_tokens["[gMASK]"], self.special_tokens["sop"]]

    def encode(self, text: str, add_special_tokens: bool = True) -> list[int]:
        ids: list[int] = self._sp.encode(text)
        return self._prefix + ids if add_special_tokens else ids

    def encode_pieces(self, text: str) -> list[str]:
        return list(self._sp.encode_as_pieces(text))

    def decode(self, ids: Sequence[int], skip_special_tokens: bool = True) -> str:
        skip = self._skip_ids if skip_special_tokens else frozenset()
        return decode_table(self._table, ids, skip, True, self._spaced, self._restart_ids)

    def new_decoder(self, skip_special_tokens: bool = True) -> IncrementalDecoder:
        skip = self._skip_ids if skip_special_tokens else frozenset()
        return ByteTableDecoder(self._table, skip, True, self._spaced, self._restart_ids)

    def id_to_piece(self, token_id: int) -> str:
        return self._table[token_id].decode("utf-8", errors="replace")


class ChatGLM2Format(SentencePieceGLM):
    """ChatGLM2-6B: no roles; history becomes `[Round i]` blocks counted from 1."""

    name = "chatglm2"

    def __init__(self, folder: str | os.PathLike[str]) -> None:
        super().__init__(folder, _SPECIAL_NAMES)
        self.stop_token_ids = (self.special_tokens["</s>"],)

    def chat_prompt(
        self, messages: Sequence[ChatMessage], tools: Sequence[dict[str, Any]] | None = None
    ) -> list[int]:
        _reject_tools(tools, self.name)
        return self.legacy_prompt(*messages_to_query_history(messages, self.name))

    def legacy_prompt(self, query: str, history: Sequence[tuple[str, str]]) -> list[int]:
        prompt = "".join(
            f"[Round {i}]\n\n问：{old_query}\n\n答：{response}\n\n"
            for i, (old_query, response) in enumerate(history, start=1)
        )
        return self.encode(f"{prompt}[Round {len(history) + 1}]\n\n问：{query}\n\n答：")
