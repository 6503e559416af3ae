"""`EngineClient`: the seam between serving/ and the engine.

The real `AsyncEngine` implements it; the HTTP tests use a scripted fake. Nothing here
imports torch, so serving/ and http/ stay importable without a model.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any, Protocol

from glm_api.engine.request import RequestOutput, SamplingParams
from glm_api.formats.base import ChatFormat


@dataclass(slots=True)
class EngineStats:
    """A snapshot for /metrics. Counters are totals since start."""

    num_running: int = 0
    num_waiting: int = 0
    kv_cache_usage: float = 0.0  # 0..1
    num_prompt_tokens_total: int = 0
    num_generation_tokens_total: int = 0
    num_steps_total: int = 0
    #: requests per step, for every step since the last snapshot (drained on read)
    batch_sizes: list[int] = field(default_factory=list)
    #: seconds from arrival to first token, for requests since the last snapshot (drained)
    time_to_first_token: list[float] = field(default_factory=list)


class EngineClient(Protocol):
    """What serving/ needs of an engine."""

    @property
    def format(self) -> ChatFormat:
        """The chat format (tokenizer, prompt rules) of the loaded checkpoint."""
        ...

    @property
    def max_model_len(self) -> int: ...

    @property
    def generation_defaults(self) -> dict[str, Any]:
        """Defaults from generation_config.json, keyed as SamplingParams fields."""
        ...

    @property
    def is_ready(self) -> bool: ...

    def generate(
        self, prompt_ids: list[int], params: SamplingParams, request_id: str
    ) -> AsyncIterator[RequestOutput]:
        """Start a request; yields deltas until one has a finish_reason.

        Raises PromptTooLongError / ServerBusyError / InvalidRequestError before the first
        yield. Closing the iterator early (client gone) aborts the request.
        """
        ...

    async def abort(self, request_id: str) -> None: ...

    def stats(self) -> EngineStats: ...
