"""Continuous batching: which requests run in the next step, and with how many tokens.

Every step, each running request that is decoding gets one token first (decodes are never
stalled), then prompts are prefilled in chunks under the per-step token budget
`max_num_batched_tokens` (chunked prefill), so a long prompt shares steps with decodes.
A waiting request is admitted when a cache slot is free; since a slot holds a whole
context, an admitted request always finishes and nothing is ever preempted.

Prefix reuse: a finished request's slot keeps its prompt's keys and values, and a new
request goes to the free slot holding the longest prefix of its prompt, whose prefill then
starts after that prefix (at most all but the prompt's last id, which must run to give the
first logits). Only prompt positions are kept: they were computed by prefill, exactly as this
request's own prefill would compute them (in float32 on the CPU a prompt row gets the same
bits in any chunk, attention.py; tested), so a reply does not depend on what ran before it.
Generated positions were computed by the decode path, to other bits, and are not reused;
nor are ChatGLM-6B's bidirectional prompts.

The scheduler never touches tensors (the runner does) and never detokenizes (the async
engine does, and finishes a request on a stop string through `finish_request`).
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field

from glm_api.engine.errors import ServerBusyError
from glm_api.engine.kv_cache import SlotAllocator
from glm_api.engine.request import FinishReason, Request, RequestStatus


@dataclass(slots=True)
class ScheduledChunk:
    """`num_tokens` ids of one request, from position `start`, to run in this step."""

    request: Request
    start: int
    num_tokens: int
    #: the chunk reaches the end of the known ids: its last row yields the next token
    needs_sample: bool


@dataclass(slots=True)
class SchedulerOutput:
    """One step's work: decode chunks first, then prefill chunks."""

    chunks: list[ScheduledChunk] = field(default_factory=list)

    @property
    def num_tokens(self) -> int:
        return sum(chunk.num_tokens for chunk in self.chunks)

    @property
    def is_empty(self) -> bool:
        return not self.chunks


class Scheduler:
    def __init__(
        self,
        slots: SlotAllocator,
        max_num_seqs: int,
        max_num_batched_tokens: int,
        max_queue_len: int,
        reuse_prefixes: bool = True,
    ) -> None:
        self.slots = slots
        self.reuse_prefixes = reuse_prefixes
        #: prompt ids whose prefill a reused prefix saved, since start
        self.num_reused_tokens = 0
        self.max_num_seqs = max_num_seqs
        self.max_num_batched_tokens = max_num_batched_tokens
        self.max_queue_len = max_queue_len
        self.waiting: deque[Request] = deque()
        self.running: list[Request] = []

    @property
    def has_work(self) -> bool:
        return bool(self.running or self.waiting)

    def add_request(self, request: Request) -> None:
        if len(self.waiting) >= self.max_queue_len:
            raise ServerBusyError(
                f"The server is busy: {len(self.waiting)} requests are waiting. Retry later."
            )
        request.status = RequestStatus.WAITING
        self.waiting.append(request)

    def schedule(self) -> SchedulerOutput:
        output = SchedulerOutput()
        budget = self.max_num_batched_tokens
        for request in self.running:
            if not request.is_prefilling:
                output.chunks.append(ScheduledChunk(request, request.num_computed, 1, True))
                budget -= 1
        num_prefills = 0
        for request in self.running:
            if request.is_prefilling and budget > 0:
                budget -= self._add_prefill(output, request, budget, num_prefills == 0)
                num_prefills += 1
        while self.waiting and budget > 0 and len(self.running) < self.max_num_seqs:
            if self._needed_in_one_chunk(self.waiting[0]) > budget and num_prefills > 0:
                break  # its bidirectional part waits for a step with room
            slot = self._allocate(self.waiting[0])
            if slot is None:
                break
            request = self.waiting.popleft()
            request.slot, request.status = slot, RequestStatus.RUNNING
            self.running.append(request)
            budget -= self._add_prefill(output, request, budget, num_prefills == 0)
            num_prefills += 1
        return output

    def _allocate(self, request: Request) -> int | None:
        """A slot for `request`, and its prefill's start after the prefix the slot holds."""
        if not self._reuses_prefixes(request):
            return self.slots.allocate()
        allocated = self.slots.allocate_reusing(request.prompt_ids)
        if allocated is None:
            return None
        slot, num_held = allocated
        request.num_computed = request.num_reused = min(num_held, request.num_prompt_tokens - 1)
        self.num_reused_tokens += request.num_reused
        return slot

    def _reuses_prefixes(self, request: Request) -> bool:
        """Whether `request` may start from, and leave, a prompt prefix in its slot."""
        return self.reuse_prefixes and not request.num_bidirectional

    @staticmethod
    def _needed_in_one_chunk(request: Request) -> int:
        """Tokens the next chunk must hold at least: the rest of a bidirectional part, or 1."""
        return max(1, request.num_bidirectional - request.num_computed)

    def _add_prefill(
        self, output: SchedulerOutput, request: Request, budget: int, may_exceed: bool
    ) -> int:
        """Schedule the next prompt chunk of `request`; returns the tokens used (maybe 0)."""
        remaining = request.num_prompt_tokens - request.num_computed
        num = min(remaining, budget)
        needed = min(remaining, self._needed_in_one_chunk(request))
        if num < needed:
            # a bidirectional prompt part cannot be split; only the first prefill of a step
            # may overshoot the budget, so every step stays bounded yet makes progress
            if not may_exceed:
                return 0
            num = needed
        if num <= 0:
            return 0
        start = request.num_computed
        is_last = start + num == request.num_prompt_tokens
        output.chunks.append(ScheduledChunk(request, start, num, is_last))
        return num

    def update_from_output(
        self, output: SchedulerOutput, sampled_ids: list[int | None]
    ) -> list[Request]:
        """Advance the step's requests; `sampled_ids[i]` is chunk i's new id (None: no sample).

        Returns the requests that got a new id (finished ones included). Requests aborted
        while the step ran are skipped.
        """
        updated: list[Request] = []
        for chunk, token_id in zip(output.chunks, sampled_ids, strict=True):
            request = chunk.request
            if request.is_finished:
                continue
            request.num_computed = chunk.start + chunk.num_tokens
            if not chunk.needs_sample or token_id is None:
                continue
            request.output_ids.append(token_id)
            updated.append(request)
            if token_id in request.stop_ids and len(request.output_ids) > request.params.min_tokens:
                self.finish_request(request, FinishReason.STOP, token_id)
            elif len(request.output_ids) >= request.max_tokens:
                self.finish_request(request, FinishReason.LENGTH)
        return updated

    def finish_request(
        self, request: Request, reason: FinishReason, stop_reason: str | int | None = None
    ) -> None:
        """End a request now and free its slot at once."""
        if request.is_finished:
            return
        if request.status is RequestStatus.RUNNING:
            self.running.remove(request)
        else:
            self.waiting.remove(request)
        if request.slot is not None:
            # the prompt positions computed so far stay for a later request's prefix
            keep = self._reuses_prefixes(request)
            self.slots.free(
                request.slot, request.prompt_ids[: request.num_computed] if keep else []
            )
            request.slot = None
        request.status = RequestStatus.FINISHED
        request.finish_reason, request.stop_reason = reason, stop_reason

    def abort(self, request_id: str) -> Request | None:
        """Finish `request_id` as aborted, wherever it is; None if it is not here."""
        for queue in (self.running, self.waiting):
            for request in queue:
                if request.request_id == request_id:
                    self.finish_request(request, FinishReason.ABORT)
                    return request
        return None
