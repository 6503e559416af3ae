"""What routes reach through `request.app.state`: the serving objects, and cancellation.

`Services` is built once in app.py; a route missing its service (no chat engine) answers
404 `model_not_found`, as OpenAI does for a model it does not serve.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TypeVar

from fastapi import Request

from glm_api.engine.errors import EngineError
from glm_api.http.metrics import Metrics
from glm_api.serving.chat import ChatService
from glm_api.serving.completions import CompletionService
from glm_api.serving.embeddings import EmbeddingService
from glm_api.serving.legacy import LegacyChatService
from glm_api.serving.models import ModelNotFoundError, ServedModels
from glm_api.serving.tokenize import TokenizeService

T = TypeVar("T")


@dataclass(slots=True)
class Services:
    models: ServedModels
    embeddings: EmbeddingService
    metrics: Metrics
    ready: Callable[[], bool]
    chat: ChatService | None = None
    completions: CompletionService | None = None
    legacy: LegacyChatService | None = None
    tokenize: TokenizeService | None = None

    def need(self, service: T | None, model: str | None) -> T:
        if service is None:
            raise ModelNotFoundError(model)
        return service


def services(request: Request) -> Services:
    return request.app.state.services  # type: ignore[no-any-return]


class ClientDisconnected(EngineError):
    """Nobody is left to read the answer (logged as 499, nginx's code for it)."""

    status_code = 499
    error_type = "client_disconnected"


async def _wait_for_disconnect(request: Request) -> None:
    while (await request.receive())["type"] != "http.disconnect":
        pass


async def run_cancellable(request: Request, work: Awaitable[T]) -> T:
    """Await `work`, cancelling it (and so its engine requests) if the client goes away."""
    task = asyncio.ensure_future(work)
    watcher = asyncio.ensure_future(_wait_for_disconnect(request))
    try:
        await asyncio.wait({task, watcher}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        watcher.cancel()
    if not task.done():
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        raise ClientDisconnected("client disconnected")
    return task.result()
