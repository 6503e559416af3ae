"""Scripted fakes for the seams serving/ and http/ stand on: ChatFormat, EngineClient,
EmbeddingClient. Deterministic: one character is one token (id = code point + 100).
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from glm_api.embeddings.base import EmbeddingModelInfo, EmbeddingResult
from glm_api.engine.errors import EngineError, InvalidRequestError, PromptTooLongError
from glm_api.engine.protocol import EngineStats
from glm_api.engine.request import FinishReason, RequestOutput, SamplingParams, TokenLogprob
from glm_api.formats.base import (
    ChatFormat,
    ChatMessage,
    IncrementalDecoder,
    ParsedReply,
    ToolCall,
)

OFFSET = 100
SPECIALS = {
    "[gMASK]": 1,
    "sop": 2,
    "<eos>": 3,
    "<|system|>": 4,
    "<|user|>": 5,
    "<|assistant|>": 6,
    "<|observation|>": 7,
}
ROLE_IDS = {"system": 4, "user": 5, "assistant": 6, "tool": 7, "observation": 7}


def ids_of(text: str) -> list[int]:
    """What FakeChatFormat.encode gives without specials."""
    return [ord(c) + OFFSET for c in text]


class _Decoder(IncrementalDecoder):
    def __init__(self, fmt: FakeChatFormat):
        self.fmt = fmt

    def step(self, new_ids: Sequence[int]) -> str:
        return self.fmt.decode(new_ids)

    def flush(self) -> str:
        return ""


class FakeChatFormat(ChatFormat):
    """Prompt = [gMASK] sop, then per message: role id + its characters; ends with <|assistant|>.

    Tools are rendered as one system message holding their JSON. A reply "CALL name {json}"
    parses as a tool call when tools were given.
    """

    name = "demo"
    stop_token_ids = (3, 5, 7)
    special_tokens = SPECIALS
    vocab_size = 0x110000 + OFFSET

    def encode(self, text: str, add_special_tokens: bool = True) -> list[int]:
        return ([1, 2] if add_special_tokens else []) + ids_of(text)

    def encode_pieces(self, text: str) -> list[str]:
        return list(text)

    def decode(self, ids: Sequence[int], skip_special_tokens: bool = True) -> str:
        names = {v: k for k, v in SPECIALS.items()}
        out = []
        for i in ids:
            if i >= OFFSET:
                out.append(chr(i - OFFSET))
            elif not skip_special_tokens:
                out.append(names.get(i, f"<{i}>"))
        return "".join(out)

    def new_decoder(self, skip_special_tokens: bool = True) -> IncrementalDecoder:
        return _Decoder(self)

    def chat_prompt(
        self, messages: Sequence[ChatMessage], tools: Sequence[dict[str, Any]] | None = None
    ) -> list[int]:
        ids = [1, 2]
        if tools:
            ids += [4] + ids_of(json.dumps(list(tools), sort_keys=True))
        for m in messages:
            ids += [ROLE_IDS[m.role]] + ids_of((m.name + ":" if m.name else "") + m.content)
            for call in m.tool_calls:
                ids += ids_of(f"CALL {call.name} {call.arguments}")
        return ids + [6]

    def legacy_prompt(self, query: str, history: Sequence[tuple[str, str]]) -> list[int]:
        ids = [1, 2]
        for q, a in history:
            ids += [5] + ids_of(q) + [6] + ids_of(a)
        return ids + [5] + ids_of(query) + [6]

    def parse_reply(self, text: str, tools_given: bool) -> ParsedReply:
        if tools_given and text.startswith("CALL "):
            _, name, arguments = text.split(" ", 2)
            return ParsedReply(content="", tool_calls=[ToolCall(name, arguments)])
        return ParsedReply(content=text)


@dataclass
class Call:
    prompt_ids: list[int]
    params: SamplingParams
    request_id: str


@dataclass
class FakeEngine:
    """Replies with `reply(call)` one character (token) per delta.

    `error` is raised before the first yield; `fail_after` tokens into the reply an
    `EngineError` is raised mid-stream; `hold` makes it wait after the first token until
    released (to test disconnects). Closed iterators are recorded in `closed`.
    """

    reply: Callable[[Call], str] = lambda call: "Hello world!"
    max_model_len: int = 64
    generation_defaults: dict[str, Any] = field(
        default_factory=lambda: {"temperature": 0.8, "top_p": 0.8, "top_k": 50}
    )
    is_ready: bool = True
    error: EngineError | None = None
    fail_after: int | None = None
    hold: asyncio.Event | None = None
    format: ChatFormat = field(default_factory=FakeChatFormat)
    calls: list[Call] = field(default_factory=list)
    closed: list[str] = field(default_factory=list)
    finished: list[str] = field(default_factory=list)
    aborted: list[str] = field(default_factory=list)
    engine_stats: EngineStats = field(default_factory=EngineStats)

    async def generate(
        self, prompt_ids: list[int], params: SamplingParams, request_id: str
    ) -> AsyncIterator[RequestOutput]:
        call = Call(list(prompt_ids), params, request_id)
        self.calls.append(call)
        if self.error is not None:
            raise self.error
        if len(prompt_ids) >= self.max_model_len:
            raise PromptTooLongError(len(prompt_ids), self.max_model_len)
        ids = ids_of(self.reply(call))
        limit = params.max_tokens if params.max_tokens is not None else len(ids)
        emitted = ids[:limit]
        try:
            for n, token_id in enumerate(emitted, start=1):
                if self.fail_after is not None and n > self.fail_after:
                    raise InvalidRequestError("scripted failure mid-stream")
                finish = None
                if n == len(emitted):
                    finish = FinishReason.STOP if limit >= len(ids) else FinishReason.LENGTH
                yield RequestOutput(
                    request_id=request_id,
                    new_token_ids=[token_id],
                    new_text=self.format.decode([token_id]),
                    num_prompt_tokens=len(prompt_ids),
                    num_generated_tokens=n,
                    finish_reason=finish,
                    logprobs=_logprobs(token_id, params.logprobs),
                )
                if n == 1 and self.hold is not None:
                    await self.hold.wait()
            self.finished.append(request_id)
        finally:
            self.closed.append(request_id)

    async def abort(self, request_id: str) -> None:
        self.aborted.append(request_id)

    def stats(self) -> EngineStats:
        stats = self.engine_stats
        self.engine_stats = EngineStats(
            num_running=stats.num_running,
            num_waiting=stats.num_waiting,
            kv_cache_usage=stats.kv_cache_usage,
            num_prompt_tokens_total=stats.num_prompt_tokens_total,
            num_generation_tokens_total=stats.num_generation_tokens_total,
            num_steps_total=stats.num_steps_total,
        )  # batch sizes and ttft drain on read, as the real engine's do
        return stats


def _logprobs(token_id: int, k: int | None) -> list[TokenLogprob] | None:
    """The chosen token at -0.5; alternatives token_id+1.. at -1.5, -2.5, ..."""
    if k is None:
        return None
    top = [(token_id + j, -0.5 - j) for j in range(k)]
    return [TokenLogprob(token_id=token_id, logprob=-0.5, top=top)]


class FakeEmbeddingClient:
    """Two models; a text's vector is [len, index, 0.5, -0.25][:dimension]."""

    default_model = "fake-minilm"

    def __init__(self) -> None:
        self.calls: list[tuple[list[Any], str | None, int | None, bool]] = []

    def models(self) -> list[EmbeddingModelInfo]:
        return [
            EmbeddingModelInfo("fake-minilm", 4, 256, True, False, "en", "mean"),
            EmbeddingModelInfo("fake-zh", 3, 512, True, True, "zh", "cls"),
        ]

    async def embed(
        self,
        inputs: list[str] | list[list[int]],
        model: str | None = None,
        dimensions: int | None = None,
        truncate: bool = False,
    ) -> EmbeddingResult:
        self.calls.append((list(inputs), model, dimensions, truncate))
        info = {m.name: m for m in self.models()}[model or self.default_model]  # KeyError
        if not inputs:
            raise InvalidRequestError("input must not be empty", param="input")
        if dimensions is not None and not (info.can_shorten and dimensions <= info.dimension):
            raise InvalidRequestError(
                f"{info.name} cannot give {dimensions} dimensions", param="dimensions"
            )
        size = dimensions or info.dimension
        vectors = [[float(len(x)), float(i), 0.5, -0.25][:size] for i, x in enumerate(inputs)]
        return EmbeddingResult(vectors, sum(len(x) for x in inputs), info.name)
