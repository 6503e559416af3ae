"""The engine's units of work: SamplingParams in, Request inside, RequestOutput out.

Plain dataclasses: serving/ builds `SamplingParams` from a pydantic request, the scheduler
moves `Request`s between queues, and the async engine hands `RequestOutput`s back.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field


@dataclass(slots=True)
class SamplingParams:
    """How one request samples and when it stops. `None` means: the checkpoint's default."""

    temperature: float | None = None  # 0 -> greedy
    top_p: float | None = None
    top_k: int | None = None  # 0 or None -> off
    repetition_penalty: float | None = None  # ChatGLM/transformers semantics, 1.0 -> off
    presence_penalty: float = 0.0
    frequency_penalty: float = 0.0
    seed: int | None = None
    max_tokens: int | None = None  # None -> whatever fits in the context
    min_tokens: int = 0
    stop: list[str] = field(default_factory=list)
    stop_token_ids: list[int] = field(default_factory=list)
    ignore_eos: bool = False
    #: None -> no logprobs; k >= 0 -> the chosen token's logprob plus k top alternatives
    logprobs: int | None = None
    skip_special_tokens: bool = True


class FinishReason(str, enum.Enum):
    STOP = "stop"
    LENGTH = "length"
    ABORT = "abort"


class RequestStatus(enum.Enum):
    WAITING = enum.auto()
    RUNNING = enum.auto()
    FINISHED = enum.auto()


@dataclass(slots=True)
class TokenLogprob:
    """One generated token with its log-probability and the top alternatives."""

    token_id: int
    logprob: float
    top: list[tuple[int, float]] = field(default_factory=list)  # (token_id, logprob), best first


@dataclass(slots=True)
class RequestOutput:
    """What one engine step produced for one request (deltas, plus running totals)."""

    request_id: str
    new_token_ids: list[int]
    new_text: str
    num_prompt_tokens: int
    num_generated_tokens: int
    finish_reason: FinishReason | None = None
    #: which stop string or stop id ended the request, when one did
    stop_reason: str | int | None = None
    logprobs: list[TokenLogprob] | None = None
    #: leading prompt ids whose keys/values were reused from the cache (prefix caching)
    num_cached_tokens: int = 0

    @property
    def is_finished(self) -> bool:
        return self.finish_reason is not None


@dataclass(slots=True)
class Request:
    """One request inside the engine: its prompt, resolved parameters and progress.

    `params` is resolved by the async engine (no `None` left in temperature, top_p, top_k,
    repetition_penalty); `max_tokens` is what fits in the context. The scheduler moves a
    request between queues; the runner reads its ids; nothing here is a tensor.
    """

    request_id: str
    prompt_ids: list[int]
    params: SamplingParams
    max_tokens: int
    #: ids that end the request (the format's unless ignore_eos, plus the user's)
    stop_ids: frozenset[int] = frozenset()
    #: ChatGLM-6B (v1): prompt tokens that must be prefilled together (see attention.py)
    num_bidirectional: int = 0
    arrival_time: float = 0.0
    first_token_time: float | None = None
    output_ids: list[int] = field(default_factory=list)
    status: RequestStatus = RequestStatus.WAITING
    slot: int | None = None
    #: tokens whose keys/values are in the cache
    num_computed: int = 0
    #: leading prompt ids whose keys/values a previous request left in the slot (no prefill)
    num_reused: int = 0
    finish_reason: FinishReason | None = None
    stop_reason: str | int | None = None

    @property
    def num_prompt_tokens(self) -> int:
        return len(self.prompt_ids)

    @property
    def num_tokens(self) -> int:
        return len(self.prompt_ids) + len(self.output_ids)

    @property
    def is_prefilling(self) -> bool:
        return self.num_computed < len(self.prompt_ids)

    @property
    def is_finished(self) -> bool:
        return self.status is RequestStatus.FINISHED

    def token_slice(self, start: int, num: int) -> list[int]:
        """Ids `start : start + num` of prompt + output, without concatenating both lists."""
        num_prompt = len(self.prompt_ids)
        if start + num <= num_prompt:
            return self.prompt_ids[start : start + num]
        if start >= num_prompt:
            return self.output_ids[start - num_prompt : start - num_prompt + num]
        return self.prompt_ids[start:] + self.output_ids[: start + num - num_prompt]
