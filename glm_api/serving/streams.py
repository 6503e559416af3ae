"""Running engine requests for serving/: start n of them, merge their deltas, collect them.

The engine's `generate()` raises its typed errors (prompt too long, server busy) at the first
step, so `open_streams` takes that step for every request before a response starts: errors
still become an HTTP status. Closing a stream closes the engine's iterator, which aborts it.
"""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

from glm_api.engine.errors import PromptTooLongError
from glm_api.engine.protocol import EngineClient
from glm_api.engine.request import FinishReason, RequestOutput, SamplingParams, TokenLogprob

_DONE = object()


async def close_stream(stream: AsyncIterator[RequestOutput]) -> None:
    """Close an engine iterator (this aborts its request); a no-op when it has finished."""
    aclose = getattr(stream, "aclose", None)
    if aclose is not None:
        await aclose()


async def _prefixed(
    first: RequestOutput, rest: AsyncIterator[RequestOutput]
) -> AsyncIterator[RequestOutput]:
    try:
        yield first
        if first.is_finished:
            return
        async for output in rest:
            yield output
            if output.is_finished:
                return
    finally:
        await close_stream(rest)


async def _reply_text(stream: AsyncIterator[RequestOutput]) -> AsyncIterator[RequestOutput]:
    """Drop the whitespace a reply opens with (ChatGLM3/GLM-4 answer `\\n` first)."""
    is_started = False
    try:
        async for output in stream:
            if not is_started:
                output.new_text = output.new_text.lstrip()
                is_started = bool(output.new_text)
            yield output
    finally:
        await close_stream(stream)


async def _first_step(
    engine: EngineClient,
    job: tuple[list[int], SamplingParams, str],
    is_reply: bool,
) -> AsyncIterator[RequestOutput]:
    stream = engine.generate(*job)
    if is_reply and engine.format.strips_reply_start:
        stream = _reply_text(stream)
    try:
        first = await anext(stream)
    except BaseException:
        await close_stream(stream)
        raise
    return _prefixed(first, stream)


async def open_streams(
    engine: EngineClient,
    jobs: list[tuple[list[int], SamplingParams, str]],
    is_reply: bool = False,
) -> list[AsyncIterator[RequestOutput]]:
    """Start every (prompt_ids, params, request_id) job; raise the first engine error.

    `is_reply`: the outputs are a chat reply (not a raw completion), whose opening
    whitespace the format may drop.
    """
    results = await asyncio.gather(
        *(_first_step(engine, job, is_reply) for job in jobs), return_exceptions=True
    )
    streams = [r for r in results if not isinstance(r, BaseException)]
    errors = [r for r in results if isinstance(r, BaseException)]
    if errors:
        for stream in streams:
            await close_stream(stream)
        raise errors[0]
    return streams


def fit_max_tokens(
    engine: EngineClient, num_prompt_tokens: int, max_tokens: int | None, param: str = "messages"
) -> int | None:
    """Refuse a prompt that fills the context; cap max_tokens at the room left after it."""
    if num_prompt_tokens >= engine.max_model_len:
        error = PromptTooLongError(num_prompt_tokens, engine.max_model_len)
        error.param = param  # the field the client should shorten
        raise error
    room = engine.max_model_len - num_prompt_tokens
    return None if max_tokens is None else min(max_tokens, room)


def fan_out(params: SamplingParams, n: int) -> list[SamplingParams]:
    """n copies for n choices; a seeded request gets seeds seed, seed+1, ..."""
    if params.seed is None:
        return [dataclasses.replace(params) for _ in range(n)]
    return [dataclasses.replace(params, seed=params.seed + i) for i in range(n)]


async def _pump(
    index: int, stream: AsyncIterator[RequestOutput], queue: asyncio.Queue[tuple[int, object]]
) -> None:
    try:
        async for output in stream:
            queue.put_nowait((index, output))
    except Exception as exc:  # handed to the consumer, which re-raises it
        queue.put_nowait((index, exc))
    finally:
        await close_stream(stream)
        queue.put_nowait((index, _DONE))


async def merge(
    streams: list[AsyncIterator[RequestOutput]],
) -> AsyncIterator[tuple[int, RequestOutput]]:
    """Deltas of all streams as (choice index, output), in arrival order."""
    queue: asyncio.Queue[tuple[int, object]] = asyncio.Queue()
    tasks = [asyncio.create_task(_pump(i, s, queue)) for i, s in enumerate(streams)]
    try:
        remaining = len(tasks)
        while remaining:
            index, item = await queue.get()
            if item is _DONE:
                remaining -= 1
            elif isinstance(item, BaseException):
                raise item
            else:
                assert isinstance(item, RequestOutput)
                yield index, item
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


@dataclass(slots=True)
class Collected:
    """One choice's whole answer, gathered from its deltas."""

    text: str = ""
    token_ids: list[int] = field(default_factory=list)
    logprobs: list[TokenLogprob] = field(default_factory=list)
    num_prompt_tokens: int = 0
    num_generated_tokens: int = 0
    num_cached_tokens: int = 0
    finish_reason: FinishReason | None = None

    def add(self, output: RequestOutput) -> None:
        self.text += output.new_text
        self.token_ids.extend(output.new_token_ids)
        self.logprobs.extend(output.logprobs or [])
        self.num_prompt_tokens = output.num_prompt_tokens
        self.num_generated_tokens = output.num_generated_tokens
        self.num_cached_tokens = output.num_cached_tokens
        self.finish_reason = output.finish_reason or self.finish_reason


async def collect(streams: list[AsyncIterator[RequestOutput]]) -> list[Collected]:
    collected = [Collected() for _ in streams]
    async for index, output in merge(streams):
        collected[index].add(output)
    return collected
