"""GLM-4-9B-chat (original layout): tiktoken BPE over `tokenizer.model`, GLM-4 chat prompts.

Reproduces THUDM/glm-4-9b-chat's tokenization_chatglm.py and the chat template in its
tokenizer_config.json: `[gMASK]<sop>`, then `<|role|>{metadata}\\n{content}` per message with
nothing in between, then `<|assistant|>`. `Glm4StyleFormat` holds those prompt rules for any
byte-table tokenizer with GLM-4's specials; the demo format reuses it.
"""

from __future__ import annotations

import base64
import os
from abc import abstractmethod
from collections.abc import Sequence
from typing import Any

import tiktoken

from glm_api.formats.base import ChatFormat, ChatMessage, IncrementalDecoder, ParsedReply
from glm_api.formats.chatglm import history_to_messages
from glm_api.formats.decoding import ByteTableDecoder, decode_table
from glm_api.formats.tools import glm4_tools_text, parse_glm4

GLM4_PATTERN = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*"
    r"|\s*[\r\n]+|\s+(?!\S)|\s+"
)
GLM4_SPECIAL_NAMES = (
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
    "<|begin_of_image|>",
    "<|end_of_image|>",
    "<|begin_of_video|>",
    "<|end_of_video|>",
)
_ROLES = {"system": "system", "user": "user", "assistant": "assistant"}
_ROLES.update({"tool": "observation", "observation": "observation"})


class Glm4StyleFormat(ChatFormat):
    """GLM-4 prompt rules over a byte-table tokenizer; subclasses provide `encode_ordinary`.

    Subclasses set `special_tokens` (with GLM-4's names), `_table` (bytes per id) and
    `_skip_ids`, then call `_init_glm4()`.
    """

    _table: Sequence[bytes]
    _skip_ids: frozenset[int]
    strips_reply_start = True

    def _init_glm4(self) -> None:
        tokens = self.special_tokens
        self.stop_token_ids = (
            tokens["<|endoftext|>"],
            tokens["<|user|>"],
            tokens["<|observation|>"],
        )
        self._prefix = [tokens["[gMASK]"], tokens["<sop>"]]

    @abstractmethod
    def encode_ordinary(self, text: str) -> list[int]:
        """Ids of plain text; special-token names in it stay text."""

    def encode(self, text: str, add_special_tokens: bool = True) -> list[int]:
        ids = self.encode_ordinary(text)
        return self._prefix + ids if add_special_tokens else ids

    def decode(self, ids: Sequence[int], skip_special_tokens: bool = True) -> str:
        return decode_table(
            self._table, ids, self._skip_ids if skip_special_tokens else frozenset()
        )

    def new_decoder(self, skip_special_tokens: bool = True) -> IncrementalDecoder:
        return ByteTableDecoder(self._table, self._skip_ids if skip_special_tokens else frozenset())

    def id_to_piece(self, token_id: int) -> str:
        return self._table[token_id].decode("utf-8", errors="replace")

    def _message(self, role: str, metadata: str, content: str) -> list[int]:
        if role not in _ROLES:
            raise ValueError(f"{self.name}: unknown message role {role!r}")
        return [self.special_tokens[f"<|{_ROLES[role]}|>"]] + self.encode_ordinary(
            f"{metadata}\n{content}"
        )

    def chat_prompt(
        self, messages: Sequence[ChatMessage], tools: Sequence[dict[str, Any]] | None = None
    ) -> list[int]:
        ids = list(self._prefix)
        if tools:
            # The template's tool message: `<|system|>` + preamble + `# 可用工具` sections.
            ids += [self.special_tokens["<|system|>"]] + self.encode_ordinary(
                glm4_tools_text(tools)
            )
        for message in messages:
            if message.role == "assistant" and message.tool_calls:
                if message.content:
                    ids += self._message("assistant", message.metadata, message.content)
                for call in message.tool_calls:
                    ids += self._message("assistant", call.name, call.arguments)
            elif message.content:  # the template skips messages with empty content
                ids += self._message(message.role, message.metadata, message.content)
        return ids + [self.special_tokens["<|assistant|>"]]

    def legacy_prompt(self, query: str, history: Sequence[tuple[str, str]]) -> list[int]:
        return self.chat_prompt(history_to_messages(query, history))

    def parse_reply(self, text: str, tools_given: bool) -> ParsedReply:
        return parse_glm4(text, tools_given)


def read_tiktoken_ranks(path: str | os.PathLike[str]) -> dict[bytes, int]:
    """`base64-token rank` per line, as glm-4-9b-chat's tokenizer.model stores its BPE."""
    ranks: dict[bytes, int] = {}
    with open(path, "rb") as handle:
        for line in handle:
            if line.strip():
                token, rank = line.split()
                ranks[base64.b64decode(token)] = int(rank)
    return ranks


def glm4_encoding(path: str | os.PathLike[str]) -> tiktoken.Encoding:
    """The tiktoken Encoding of a GLM-4 `tokenizer.model`, specials numbered after the ranks."""
    ranks = read_tiktoken_ranks(path)
    specials = {name: len(ranks) + i for i, name in enumerate(GLM4_SPECIAL_NAMES)}
    return tiktoken.Encoding(
        name="glm4", pat_str=GLM4_PATTERN, mergeable_ranks=ranks, special_tokens=specials
    )


class Glm4Format(Glm4StyleFormat):
    """GLM-4-9B-chat read with tiktoken (loaded once per instance)."""

    name = "glm4"

    def __init__(self, folder: str | os.PathLike[str]) -> None:
        self._encoding = glm4_encoding(os.path.join(folder, "tokenizer.model"))
        num_ranks = self._encoding.n_vocab - len(GLM4_SPECIAL_NAMES)
        self.special_tokens = {name: num_ranks + i for i, name in enumerate(GLM4_SPECIAL_NAMES)}
        table = [self._encoding.decode_single_token_bytes(i) for i in range(num_ranks)]
        self._table = table + [name.encode() for name in GLM4_SPECIAL_NAMES]
        self._skip_ids = frozenset(self.special_tokens.values())
        self.vocab_size = len(self._table)
        self._init_glm4()

    def encode_ordinary(self, text: str) -> list[int]:
        return self._encoding.encode_ordinary(text)

    def encode_pieces(self, text: str) -> list[str]:
        return [self.id_to_piece(i) for i in self.encode_ordinary(text)]
