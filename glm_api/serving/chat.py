"""POST /v1/chat/completions: messages -> prompt ids -> n engine requests -> response or chunks.

Tools: the prompt offers them (formats/ renders them) and the finished reply goes through
`format.parse_reply`. A streamed choice with tools is held back until it finishes, because
only the whole reply tells a tool call from text; it then arrives as one delta.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from typing import Any

from glm_api.engine.errors import InvalidRequestError
from glm_api.engine.protocol import EngineClient
from glm_api.engine.request import RequestOutput, SamplingParams
from glm_api.formats.base import ChatFormat, ChatMessage, ToolCall
from glm_api.protocol.openai import (
    ChatChoiceLogprobs,
    ChatCompletionChoice,
    ChatCompletionRequest,
    ChatCompletionResponse,
    ChatCompletionStreamChoice,
    ChatCompletionStreamResponse,
    ChatMessageParam,
    ChatResponseMessage,
    DeltaMessage,
    FunctionCall,
    ToolCallDelta,
    ToolCallOut,
    UsageInfo,
)
from glm_api.serving.logprobs import chat_logprobs
from glm_api.serving.models import ServedModels
from glm_api.serving.streams import Collected, collect, fan_out, fit_max_tokens, merge, open_streams


def to_chat_messages(messages: Sequence[ChatMessageParam]) -> list[ChatMessage]:
    """Protocol messages as formats/ takes them; a tool result gets its function's name."""
    names_by_call: dict[str, str] = {}
    out = []
    for message in messages:
        calls = [ToolCall(c.function.name, c.function.arguments) for c in message.tool_calls or []]
        names_by_call.update({c.id: c.function.name for c in message.tool_calls or []})
        name = message.name
        if message.role == "tool" and name is None and message.tool_call_id:
            name = names_by_call.get(message.tool_call_id)
        role = "system" if message.role == "developer" else message.role
        out.append(ChatMessage(role=role, content=message.text(), name=name, tool_calls=calls))
    return out


def tool_calls_out(calls: Sequence[ToolCall]) -> list[ToolCallOut]:
    return [
        ToolCallOut(
            id=f"call_{uuid.uuid4().hex[:24]}",
            function=FunctionCall(name=c.name, arguments=c.arguments),
        )
        for c in calls
    ]


@dataclass(slots=True)
class _Job:
    """One chat request, rendered and ready for the engine."""

    request: ChatCompletionRequest
    response_id: str
    prompt_ids: list[int]
    params: SamplingParams
    has_tools: bool

    def engine_jobs(self) -> list[tuple[list[int], SamplingParams, str]]:
        params = fan_out(self.params, self.request.n)
        return [(self.prompt_ids, p, f"{self.response_id}-{i}") for i, p in enumerate(params)]


@dataclass(slots=True)
class _Reply:
    content: str | None
    tool_calls: list[ToolCallOut]
    finish: str | None
    logprobs: ChatChoiceLogprobs | None


def render_chat(
    fmt: ChatFormat, messages: Sequence[ChatMessageParam], tools: list[dict[str, Any]] | None = None
) -> list[int]:
    """The chat prompt ids; what the generation cannot express is the client's error (400)."""
    try:
        return fmt.chat_prompt(to_chat_messages(messages), tools)
    except ValueError as error:  # e.g. tools for ChatGLM2, a tool call that is not JSON
        raise InvalidRequestError(str(error), param="messages") from error


class ChatService:
    def __init__(self, engine: EngineClient, models: ServedModels):
        self.engine = engine
        self.models = models

    def _prepare(self, request: ChatCompletionRequest, response_id: str) -> _Job:
        self.models.check_chat(request.model)
        tools = request.active_tools()
        prompt_ids = render_chat(self.engine.format, request.messages, tools)
        params = request.to_sampling_params(self.engine.generation_defaults)
        params.max_tokens = fit_max_tokens(self.engine, len(prompt_ids), params.max_tokens)
        return _Job(request, response_id, prompt_ids, params, tools is not None)

    def _reply(self, job: _Job, result: Collected) -> _Reply:
        """A finished choice: its text through the tool-call parser, its logprobs."""
        parsed = self.engine.format.parse_reply(result.text, tools_given=job.has_tools)
        finish = result.finish_reason.value if result.finish_reason else None
        logprobs = None
        if job.request.logprobs:
            logprobs = chat_logprobs(self.engine.format, result.logprobs)
        if not parsed.tool_calls:
            return _Reply(parsed.content, [], finish, logprobs)
        calls = tool_calls_out(parsed.tool_calls)
        return _Reply(parsed.content or None, calls, "tool_calls", logprobs)

    async def create(
        self, request: ChatCompletionRequest, response_id: str
    ) -> ChatCompletionResponse:
        job = self._prepare(request, response_id)
        results = await collect(await open_streams(self.engine, job.engine_jobs(), is_reply=True))
        choices = [self._choice(job, i, result) for i, result in enumerate(results)]
        return ChatCompletionResponse(
            id=response_id, model=request.model, choices=choices, usage=_usage(results)
        )

    def _choice(self, job: _Job, index: int, result: Collected) -> ChatCompletionChoice:
        reply = self._reply(job, result)
        message = ChatResponseMessage(content=reply.content, tool_calls=reply.tool_calls or None)
        return ChatCompletionChoice(
            index=index, message=message, logprobs=reply.logprobs, finish_reason=reply.finish
        )

    async def create_stream(
        self, request: ChatCompletionRequest, response_id: str
    ) -> AsyncIterator[str]:
        """Starts the engine requests now (errors raise here); returns the chunks' JSON."""
        job = self._prepare(request, response_id)
        streams = await open_streams(self.engine, job.engine_jobs(), is_reply=True)
        return _ChatStream(self, job).events(streams)


class _ChatStream:
    """The chunk sequence of one streamed chat request, one small step per kind of chunk."""

    def __init__(self, service: ChatService, job: _Job):
        self.service = service
        self.job = job
        self.results = [Collected() for _ in range(job.request.n)]
        options = job.request.stream_options
        self.include_usage = bool(options and options.include_usage)

    async def events(self, streams: list[AsyncIterator[RequestOutput]]) -> AsyncIterator[str]:
        for index in range(len(streams)):
            yield self._chunk(
                [
                    ChatCompletionStreamChoice(
                        index=index, delta=DeltaMessage(role="assistant", content="")
                    )
                ]
            )
        async for index, output in merge(streams):
            self.results[index].add(output)
            for choice in self._on_output(index, output):
                yield self._chunk([choice])
        if self.include_usage:
            yield self._chunk([], usage=_usage(self.results))

    def _chunk(
        self, choices: list[ChatCompletionStreamChoice], usage: UsageInfo | None = None
    ) -> str:
        chunk = ChatCompletionStreamResponse(
            id=self.job.response_id, model=self.job.request.model, choices=choices, usage=usage
        )
        exclude = None if self.include_usage else {"usage"}
        return chunk.model_dump_json(exclude=exclude)

    def _on_output(self, index: int, output: RequestOutput) -> list[ChatCompletionStreamChoice]:
        if self.job.has_tools:
            return self._on_finished_with_tools(index) if output.is_finished else []
        choices = []
        if output.new_text or output.logprobs:
            logprobs = None
            if self.job.request.logprobs:
                logprobs = chat_logprobs(self.service.engine.format, output.logprobs or [])
            delta = DeltaMessage(content=output.new_text)
            choices.append(ChatCompletionStreamChoice(index=index, delta=delta, logprobs=logprobs))
        if output.finish_reason is not None:
            finish = output.finish_reason.value
            choices.append(
                ChatCompletionStreamChoice(index=index, delta=DeltaMessage(), finish_reason=finish)
            )
        return choices

    def _on_finished_with_tools(self, index: int) -> list[ChatCompletionStreamChoice]:
        reply = self.service._reply(self.job, self.results[index])
        delta = DeltaMessage(content=reply.content)
        if reply.tool_calls:
            delta.tool_calls = [
                ToolCallDelta(index=i, id=c.id, function=c.function)
                for i, c in enumerate(reply.tool_calls)
            ]
        return [
            ChatCompletionStreamChoice(index=index, delta=delta, logprobs=reply.logprobs),
            ChatCompletionStreamChoice(
                index=index, delta=DeltaMessage(), finish_reason=reply.finish
            ),
        ]


def _usage(results: Sequence[Collected]) -> UsageInfo:
    """The prompt is counted once, however many choices share it."""
    prompt = results[0].num_prompt_tokens if results else 0
    completion = sum(r.num_generated_tokens for r in results)
    cached = results[0].num_cached_tokens if results else 0
    return UsageInfo.of(prompt, completion, cached)
