"""The contract every GLM generation's format implements.

A format owns one generation's tokenizer, its chat and legacy prompt rules, its special and
stop token ids, and its tool-call parser. It never touches tensors or the model; `serving/`
calls it to turn messages into ids, and the engine calls `new_decoder()` to stream text.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any


@dataclass(slots=True)
class ToolCall:
    """A function call the model asked for (OpenAI `tool_calls[i].function`)."""

    name: str
    arguments: str  # JSON text, as OpenAI sends it


@dataclass(slots=True)
class ChatMessage:
    """One OpenAI-style message, already validated by `protocol/`.

    role is one of system, user, assistant, tool (and observation, GLM's name for tool).
    """

    role: str
    content: str = ""
    name: str | None = None
    tool_calls: list[ToolCall] = field(default_factory=list)
    metadata: str = ""


@dataclass(slots=True)
class ParsedReply:
    """An assistant reply split into its visible text and any tool calls."""

    content: str
    tool_calls: list[ToolCall] = field(default_factory=list)


class IncrementalDecoder(ABC):
    """Turns a growing list of ids into text deltas without ever emitting broken UTF-8.

    `step(new_ids)` returns the text that became final with these ids (possibly "");
    `flush()` returns whatever is still held back at the end of the sequence.
    """

    @abstractmethod
    def step(self, new_ids: Sequence[int]) -> str: ...

    @abstractmethod
    def flush(self) -> str: ...


class ChatFormat(ABC):
    """One GLM generation: tokenizer + prompt rules + stop ids + tool-call parser."""

    #: generation id: "chatglm-6b", "chatglm2", "chatglm3", "glm4", "glm4-hf", "demo"
    name: str
    #: ids that end generation (the model's eos and the role tokens that end a turn)
    stop_token_ids: tuple[int, ...]
    #: special token name -> id, e.g. {"[gMASK]": 151331, ...}
    special_tokens: dict[str, int]
    #: number of ids the tokenizer can produce (<= the model's embedding rows)
    vocab_size: int
    #: replies open with the newline that ends the assistant's (empty) metadata line
    #: (ChatGLM3, GLM-4); serving drops leading whitespace so it is not part of the answer
    strips_reply_start: bool = False
    #: bytes per id, for tokenizers whose ids map to fixed byte strings (sentencepiece with
    #: byte fallback, tiktoken BPE, the demo's bytes); empty: `token_bytes` asks `decode`
    _table: Sequence[bytes] = ()

    @abstractmethod
    def encode(self, text: str, add_special_tokens: bool = True) -> list[int]:
        """Ids of `text`; with specials as the generation's tokenizer adds them by default."""

    @abstractmethod
    def encode_pieces(self, text: str) -> list[str]:
        """The token pieces of `text` without special tokens (for `/tokenize`)."""

    @abstractmethod
    def decode(self, ids: Sequence[int], skip_special_tokens: bool = True) -> str: ...

    @abstractmethod
    def new_decoder(self, skip_special_tokens: bool = True) -> IncrementalDecoder: ...

    @abstractmethod
    def chat_prompt(
        self, messages: Sequence[ChatMessage], tools: Sequence[dict[str, Any]] | None = None
    ) -> list[int]:
        """The full prompt ids for a chat, ending where the assistant starts answering."""

    @abstractmethod
    def legacy_prompt(self, query: str, history: Sequence[tuple[str, str]]) -> list[int]:
        """The prompt the generation's own `model.chat(query, history)` built."""

    def completion_prompt(self, text: str) -> list[int]:
        """Prompt ids for `/v1/completions`: the text with the generation's specials."""
        return self.encode(text, add_special_tokens=True)

    def parse_reply(self, text: str, tools_given: bool) -> ParsedReply:
        """Split a finished reply into content and tool calls (no tools: text as is)."""
        return ParsedReply(content=text)

    def id_to_piece(self, token_id: int) -> str:
        """The text of one id alone (a lone byte of a longer character reads U+FFFD)."""
        return self.decode([token_id], skip_special_tokens=False)

    def token_bytes(self, token_id: int) -> bytes:
        """The exact bytes one id stands for, as logprobs report them.

        A byte-fallback or byte-level id is its one raw byte (never U+FFFD), a special its
        name, an id outside the vocabulary b"". The bytes of a reply's ids join to its UTF-8,
        except for what decoding drops (skipped specials, sentencepiece's first-piece space).
        Formats with no `_table` whose ids can hold part of a character override this.
        """
        if self._table:
            return self._table[token_id] if 0 <= token_id < len(self._table) else b""
        return self.decode([token_id], skip_special_tokens=False).encode("utf-8")
