"""What the engine thread hands the event loop: per-request streams and the stats counters.

`RequestStream` is one request's asyncio queue (filled from the engine thread with
`call_soon_threadsafe`) and its text state; `EngineCounters` collects what `stats()` reports.
The thread itself, and the scheduler calls, live in async_engine.py.
"""

from __future__ import annotations

import asyncio
from collections import deque
from dataclasses import dataclass, field

from glm_api.engine.errors import EngineError
from glm_api.engine.protocol import EngineStats
from glm_api.engine.request import FinishReason, Request, RequestOutput, TokenLogprob
from glm_api.engine.scheduler import SchedulerOutput
from glm_api.engine.stopping import TextStream

#: per-step and per-request samples kept for the next stats() snapshot (bounded: nobody
#: may read stats for days)
MAX_SAMPLES = 10_000


@dataclass(slots=True)
class RequestStream:
    request: Request
    text: TextStream
    loop: asyncio.AbstractEventLoop
    queue: asyncio.Queue[RequestOutput | EngineError] = field(default_factory=asyncio.Queue)

    def put(self, item: RequestOutput | EngineError) -> None:
        """Called from the engine thread (or the loop): the item reaches the loop's queue."""
        try:
            self.loop.call_soon_threadsafe(self.queue.put_nowait, item)
        except RuntimeError:  # the loop is closed: nobody is listening any more
            pass

    def detokenize(self) -> tuple[str, str | None]:
        """Text made final by the newest id, and a stop string if one appeared.

        A stop id's own text is never sent; at the end of a request the held-back text and
        the decoder's tail are released (or cut at a stop string they complete).
        """
        request = self.request
        check = len(request.output_ids) >= request.params.min_tokens
        if request.finish_reason is FinishReason.STOP:
            return self.text.finish(check)
        text, found = self.text.step(request.output_ids[-1:], check)
        if found is None and request.is_finished:
            tail, found = self.text.finish(check)
            text += tail
        return text, found

    def output(self, new_ids: list[int], text: str, logprob: TokenLogprob | None) -> RequestOutput:
        request = self.request
        return RequestOutput(
            request_id=request.request_id,
            new_token_ids=new_ids,
            new_text=text,
            num_prompt_tokens=request.num_prompt_tokens,
            num_generated_tokens=len(request.output_ids),
            finish_reason=request.finish_reason,
            stop_reason=request.stop_reason,
            logprobs=[logprob] if logprob is not None else None,
            num_cached_tokens=request.num_reused,
        )


Delivery = tuple[RequestStream, "RequestOutput | EngineError"]


def deliver(items: list[Delivery]) -> None:
    """Hand a whole step's outputs to their loops: one wake-up per loop, not one per request.

    Each `call_soon_threadsafe` writes to the loop's self-pipe and wakes it, which costs more
    than detokenising a token (~100 us with the GIL handover); batching makes it per step.
    """
    by_loop: dict[asyncio.AbstractEventLoop, list[Delivery]] = {}
    for stream, item in items:
        by_loop.setdefault(stream.loop, []).append((stream, item))
    for loop, batch in by_loop.items():
        try:
            loop.call_soon_threadsafe(_put_all, batch)
        except RuntimeError:  # the loop is closed: nobody is listening any more
            pass


def _put_all(batch: list[Delivery]) -> None:
    for stream, item in batch:
        stream.queue.put_nowait(item)


@dataclass(slots=True)
class EngineCounters:
    num_prompt_tokens: int = 0
    num_generation_tokens: int = 0
    num_steps: int = 0
    batch_sizes: deque[int] = field(default_factory=lambda: deque(maxlen=MAX_SAMPLES))
    time_to_first_token: deque[float] = field(default_factory=lambda: deque(maxlen=MAX_SAMPLES))

    def count_step(self, output: SchedulerOutput, num_sampled: int) -> None:
        self.num_steps += 1
        self.num_generation_tokens += num_sampled
        self.batch_sizes.append(len(output.chunks))
        for chunk in output.chunks:
            if chunk.start < chunk.request.num_prompt_tokens:
                self.num_prompt_tokens += chunk.num_tokens

    def snapshot(self, num_running: int, num_waiting: int, kv_cache_usage: float) -> EngineStats:
        """Totals plus the samples since the last snapshot (drained)."""
        stats = EngineStats(
            num_running=num_running,
            num_waiting=num_waiting,
            kv_cache_usage=kv_cache_usage,
            num_prompt_tokens_total=self.num_prompt_tokens,
            num_generation_tokens_total=self.num_generation_tokens,
            num_steps_total=self.num_steps,
            batch_sizes=list(self.batch_sizes),
            time_to_first_token=list(self.time_to_first_token),
        )
        self.batch_sizes.clear()
        self.time_to_first_token.clear()
        return stats
