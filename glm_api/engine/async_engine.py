"""`AsyncEngine`: the model in its own thread, requests as asyncio streams (an EngineClient).

The engine thread loops schedule -> run -> update; the event loop never waits on a forward
pass. Outputs cross to the loop with `loop.call_soon_threadsafe` into one asyncio.Queue per
request. One lock guards the scheduler and the streams; it is never held during a forward
pass, so `generate()` and `abort()` from the loop wait at most for bookkeeping. When idle,
the thread sleeps on a Condition (no busy loop).

A failing step fails only the requests in it (an EngineError through their queues); the
engine keeps serving the others. On a CPU, idle OpenMP threads spin against the HTTP thread
(measured: 3.3x slower decode on 2 cores) unless told otherwise before torch is imported:
`glm-api` sets `GOMP_SPINCOUNT=3000000` (spin a few milliseconds, then sleep: within a step
the workers stay awake between parallel regions, an idle server's threads sleep; shorter
spins made every op of a step pay a wake-up: 25% slower decode). The engine cannot: torch
is already loaded here, so a program embedding it sets the variable itself. The spin only
holds while libgomp's workers do not outnumber the CPUs, so `start()` frees the OpenMP pool
of the thread that loaded the model before the engine thread makes its own (openmp.py).

Request validation and parameter defaults live in admission.py, per-request queues and
detokenisation in streams.py / stopping.py; this module owns the thread and the lock.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING, Any

import torch

from glm_api import openmp
from glm_api.config import EngineConfig
from glm_api.engine.admission import Admission, max_model_len_for
from glm_api.engine.errors import EngineDeadError, EngineError, InvalidRequestError
from glm_api.engine.kv_cache import KVCache, cache_dtype, num_slots_for
from glm_api.engine.protocol import EngineStats
from glm_api.engine.request import FinishReason, RequestOutput, SamplingParams, TokenLogprob
from glm_api.engine.runner import Runner
from glm_api.engine.scheduler import Scheduler, SchedulerOutput
from glm_api.engine.streams import Delivery, EngineCounters, RequestStream, deliver
from glm_api.formats.base import ChatFormat
from glm_api.models.base import CausalLM

if TYPE_CHECKING:
    from glm_api.models.loader import LoadedModel

logger = logging.getLogger(__name__)


class AsyncEngine:
    def __init__(
        self,
        model: CausalLM,
        format: ChatFormat,
        config: EngineConfig,
        generation_defaults: dict[str, Any] | None = None,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        self.model, self.format, self.config = model, format, config
        self.generation_defaults = dict(generation_defaults or {})
        first = next(iter(model.parameters()), None) if isinstance(model, torch.nn.Module) else None
        self.device = torch.device(device or (first.device if first is not None else "cpu"))
        dtype = cache_dtype(
            config.kv_cache_dtype, dtype or (first.dtype if first is not None else torch.float32)
        )
        self.max_model_len = max_model_len_for(model, config)
        spec = model.cache_spec
        num_slots = num_slots_for(
            spec,
            self.max_model_len,
            dtype,
            config.max_num_seqs,
            config.kv_cache_memory_gb,
            self.device,
        )
        if num_slots < 1:
            raise EngineError(
                f"the KV cache budget holds no {self.max_model_len}-token slot; "
                "raise kv_cache_memory_gb or lower max_model_len"
            )
        self.cache = KVCache(spec, num_slots, self.max_model_len, dtype, self.device)
        prefix = model.prefix_key_values()
        if prefix is not None:
            self.cache.write_prefix(prefix)
        self._admission = Admission(model, format, self.max_model_len, self.generation_defaults)
        self._scheduler = Scheduler(
            self.cache,
            config.max_num_seqs,
            config.max_num_batched_tokens,
            config.max_queue_len,
            reuse_prefixes=config.prefix_caching,
        )
        self._runner = Runner(model, self.cache, format.vocab_size, self.device, config.seed)
        self._cond = threading.Condition()
        self._streams: dict[str, RequestStream] = {}
        self._released: list[str] = []  # aborted from the loop: generators to drop
        self._counters = EngineCounters()
        self._thread: threading.Thread | None = None
        self._stopping = False
        self._dead: BaseException | None = None
        #: True while the engine thread serves (set by start, cleared by shutdown or a crash)
        self.is_ready = False

    @classmethod
    def from_loaded(cls, loaded: LoadedModel, config: EngineConfig) -> AsyncEngine:
        """From what `glm_api.models.loader.load_model` returns."""
        return cls(
            loaded.model,
            loaded.format,
            config,
            loaded.generation_defaults,
            loaded.device,
            loaded.dtype,
        )

    @property
    def num_slots(self) -> int:
        return self.cache.num_slots

    # ---- lifecycle -------------------------------------------------------------------

    def start(self) -> None:
        if self._thread is not None:
            return
        if self.config.threads:
            torch.set_num_threads(self.config.threads)
        openmp.release_pool()  # the loading thread's: the engine thread's must be the only one
        self._thread = threading.Thread(target=self._run, name="glm-engine", daemon=True)
        self._thread.start()
        self.is_ready = True

    def shutdown(self) -> None:
        self.is_ready = False
        with self._cond:
            self._stopping = True
            self._cond.notify_all()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join()
        self._fail_all(EngineDeadError("the engine was shut down"))

    async def __aenter__(self) -> AsyncEngine:
        self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await asyncio.to_thread(self.shutdown)

    # ---- the EngineClient API (event-loop side) -------------------------------------------

    async def generate(
        self, prompt_ids: list[int], params: SamplingParams, request_id: str
    ) -> AsyncIterator[RequestOutput]:
        if self._dead is not None or self._stopping:
            raise EngineDeadError("the engine is not running")
        self.start()
        request = self._admission.make_request(prompt_ids, params, request_id)
        stream = RequestStream(
            request, self._admission.text_stream(request), asyncio.get_running_loop()
        )
        self._add(stream)
        is_done = False
        try:
            while True:
                item = await stream.queue.get()
                if isinstance(item, EngineError):
                    is_done = True
                    raise item
                is_done = item.is_finished
                yield item
                if is_done:
                    return
        finally:
            if not is_done:  # the consumer left early (client gone): free the slot now
                self._abort(request_id, notify=False)

    async def abort(self, request_id: str) -> None:
        self._abort(request_id, notify=True)

    def stats(self) -> EngineStats:
        with self._cond:
            scheduler = self._scheduler
            return self._counters.snapshot(
                len(scheduler.running), len(scheduler.waiting), self.cache.usage
            )

    def _add(self, stream: RequestStream) -> None:
        request_id = stream.request.request_id
        with self._cond:
            if self._dead is not None or self._stopping:  # died after generate() checked
                raise EngineDeadError("the engine is not running")
            if request_id in self._streams:
                raise InvalidRequestError(f"Request id {request_id!r} is already running.")
            self._scheduler.add_request(stream.request)  # may raise ServerBusyError
            self._streams[request_id] = stream
            self._cond.notify()

    def _abort(self, request_id: str, notify: bool) -> None:
        with self._cond:
            request = self._scheduler.abort(request_id)
            stream = self._streams.pop(request_id, None)
            self._released.append(request_id)
        if notify and stream is not None and request is not None:
            stream.put(stream.output([], "", None))

    # ---- the engine thread --------------------------------------------------------------

    def _run(self) -> None:
        if self.config.threads:  # again in this thread: OpenMP settings can be per thread
            torch.set_num_threads(self.config.threads)
        try:
            while True:
                with self._cond:
                    while not self._stopping and not self._scheduler.has_work:
                        self._cond.wait()
                    if self._stopping:
                        return
                    output = self._scheduler.schedule()
                if output.is_empty:  # cannot happen with a sane config; never spin on it
                    time.sleep(0.001)
                    continue
                self._step(output)
        except BaseException as exc:  # a bug outside a step: report it, never die silently
            logger.exception("the engine loop stopped")
            self._dead = exc
            self.is_ready = False
            self._fail_all(EngineDeadError(f"the engine stopped: {exc!r}"))

    def _step(self, output: SchedulerOutput) -> None:
        try:
            sampled, logprobs = self._runner.execute(output)
        except Exception as exc:
            logger.exception("an engine step failed")
            self._fail_step(output, EngineError(f"the engine step failed: {exc!r}"))
            return
        deliveries: list[Delivery] = []
        with self._cond:
            updated = self._scheduler.update_from_output(output, sampled)
            self._counters.count_step(output, len(updated))
            by_request = {
                chunk.request.request_id: logprob
                for chunk, logprob in zip(output.chunks, logprobs, strict=True)
            }
            for request in updated:
                stream = self._streams.get(request.request_id)
                if stream is not None:
                    deliveries.append((stream, self._emit(stream, by_request[request.request_id])))
            for request_id in self._released:
                self._runner.release(request_id)
            self._released.clear()
        deliver(deliveries)

    def _emit(self, stream: RequestStream, logprob: TokenLogprob | None) -> RequestOutput:
        """Detokenize the request's newest id, settle stop strings; the delta to send."""
        request = stream.request
        if request.first_token_time is None:
            request.first_token_time = time.monotonic()
            ttft = request.first_token_time - request.arrival_time
            self._counters.time_to_first_token.append(ttft)
        text, found = stream.detokenize()
        if found is not None:
            self._scheduler.finish_request(request, FinishReason.STOP, found)
            request.finish_reason, request.stop_reason = FinishReason.STOP, found
        if request.is_finished:
            del self._streams[request.request_id]
            self._released.append(request.request_id)
        return stream.output(request.output_ids[-1:], text, logprob)

    def _fail_step(self, output: SchedulerOutput, error: EngineError) -> None:
        deliveries: list[Delivery] = []
        with self._cond:
            for chunk in output.chunks:
                request = chunk.request
                self._scheduler.finish_request(request, FinishReason.ABORT)
                stream = self._streams.pop(request.request_id, None)
                self._released.append(request.request_id)
                if stream is not None:
                    deliveries.append((stream, error))
        deliver(deliveries)

    def _fail_all(self, error: EngineError) -> None:
        with self._cond:
            for request_id in self._streams:
                self._scheduler.abort(request_id)
            deliveries: list[Delivery] = [(stream, error) for stream in self._streams.values()]
            self._streams.clear()
        deliver(deliveries)
