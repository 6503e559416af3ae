"""ChatGLM-6B (v1): the `ice_text.model` sentencepiece tokenizer and the `[Round i]` prompt.

Reproduces THUDM/chatglm-6b's tokenization_chatglm.py (the 2023-04 "slim" vocabulary: no
image-token offset) and its `model.chat` prompt. Also owns `messages_to_query_history`,
which the role-less generations (v1 and ChatGLM2) use to read OpenAI messages, and
`history_to_messages`, its inverse for the generations with roles.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

import sentencepiece as spm

from glm_api.formats.base import ChatFormat, ChatMessage, IncrementalDecoder
from glm_api.formats.decoding import ByteTableDecoder, decode_table, sentencepiece_table

_MAX_BLANK = 80
_SPECIALS = {"[MASK]": 130000, "[gMASK]": 130001, "<sop>": 130004, "<eop>": 130005, "<pad>": 3}


def messages_to_query_history(
    messages: Sequence[ChatMessage], generation: str
) -> tuple[str, list[tuple[str, str]]]:
    """(query, [(query, response), ...]) for a generation without roles.

    System texts are put before the final query, as ChatGLM2's openai_api demo did; other
    roles (tool results) have no place in these prompts and are refused.
    """
    system = "".join(m.content for m in messages if m.role == "system")
    history: list[tuple[str, str]] = []
    pending: str | None = None
    for message in messages:
        if message.role == "system":
            continue
        if message.role == "user":
            pending = message.content if pending is None else f"{pending}\n{message.content}"
        elif message.role == "assistant":
            history.append((pending or "", message.content))
            pending = None
        else:
            raise ValueError(f"{generation} has no {message.role!r} role (no tool support)")
    if pending is None:
        raise ValueError(f"{generation}: the last message must come from the user")
    return system + pending, history


def history_to_messages(query: str, history: Sequence[tuple[str, str]]) -> list[ChatMessage]:
    """`model.chat(query, history)` arguments as user/assistant messages (ChatGLM3, GLM-4)."""
    messages: list[ChatMessage] = []
    for old_query, response in history:
        messages += [ChatMessage("user", old_query), ChatMessage("assistant", response)]
    return [*messages, ChatMessage("user", query)]


def _reject_tools(tools: Sequence[dict[str, Any]] | None, generation: str) -> None:
    if tools:
        raise ValueError(f"{generation} does not support tools")


class ChatGLM6BFormat(ChatFormat):
    """ChatGLM-6B: `\\n` -> `<n>`, tabs and space runs -> their own pieces, then sentencepiece."""

    name = "chatglm-6b"

    def __init__(self, folder: str | os.PathLike[str]) -> None:
        self._sp = spm.SentencePieceProcessor(model_file=os.path.join(folder, "ice_text.model"))
        self.special_tokens = dict(_SPECIALS)
        self.stop_token_ids = (_SPECIALS["<eop>"],)
        self.vocab_size = self._sp.get_piece_size()
        replacements = {"<n>": "\n", "<|tab|>": "\t"}
        replacements.update({f"<|blank_{n}|>": " " * n for n in range(2, _MAX_BLANK + 1)})
        self._table, self._spaced, control = sentencepiece_table(self._sp, replacements)
        self._skip_ids = control | frozenset(_SPECIALS.values())

    @staticmethod
    def _preprocess(text: str) -> str:
        text = text.replace("\n", "<n>").replace("\t", "<|tab|>")
        for n in range(_MAX_BLANK, 1, -1):  # longest runs first
            text = text.replace(" " * n, f"<|blank_{n}|>")
        return text

    def encode(self, text: str, add_special_tokens: bool = True) -> list[int]:
        ids: list[int] = self._sp.encode(self._preprocess(text))
        if add_special_tokens:
            ids += [_SPECIALS["[gMASK]"], _SPECIALS["<sop>"]]
        return ids

    def encode_pieces(self, text: str) -> list[str]:
        return list(self._sp.encode_as_pieces(self._preprocess(text)))

    def decode(self, ids: Sequence[int], skip_special_tokens: bool = True) -> str:
        skip = self._skip_ids if skip_special_tokens else frozenset()
        return decode_table(self._table, ids, skip, True, self._spaced)

    def new_decoder(self, skip_special_tokens: bool = True) -> IncrementalDecoder:
        skip = self._skip_ids if skip_special_tokens else frozenset()
        return ByteTableDecoder(self._table, skip, True, self._spaced)

    def id_to_piece(self, token_id: int) -> str:
        return self._table[token_id].decode("utf-8", errors="replace")

    def chat_prompt(
        self, messages: Sequence[ChatMessage], tools: Sequence[dict[str, Any]] | None = None
    ) -> list[int]:
        _reject_tools(tools, self.name)
        return self.legacy_prompt(*messages_to_query_history(messages, self.name))

    def legacy_prompt(self, query: str, history: Sequence[tuple[str, str]]) -> list[int]:
        if not history:
            return self.encode(query)
        prompt = "".join(
            f"[Round {i}]\n问：{old_query}\n答：{response}\n"
            for i, (old_query, response) in enumerate(history)
        )
        return self.encode(f"{prompt}[Round {len(history)}]\n问：{query}\n答：")
