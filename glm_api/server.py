"""Wiring: settings -> model + engine + embeddings -> the FastAPI app -> uvicorn.

The server listens at once and loads the model in a background thread: `/health` answers
503 until the engine runs, and the model routes answer 503 `model_loading` meanwhile.
This module owns start-up and shutdown only; what a route does lives in http/ and serving/.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import threading
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING, Any

from glm_api.config import EngineConfig, ServerSettings
from glm_api.engine.errors import EngineError
from glm_api.engine.protocol import EngineStats
from glm_api.engine.request import RequestOutput, SamplingParams

if TYPE_CHECKING:
    from fastapi import FastAPI

    from glm_api.engine.async_engine import AsyncEngine
    from glm_api.formats.base import ChatFormat

log = logging.getLogger("glm_api")

DEMO_WARNING = (
    "No --model given: serving the built-in DEMO model (tiny, random weights, byte-level "
    "tokenizer). Its answers are noise; pass --model PATH_OR_HUB_ID for a real GLM."
)


class ModelLoadingError(EngineError):
    status_code = 503
    error_type = "model_loading"
    code = "model_loading"


class PendingEngine:
    """An `EngineClient` that answers 503 until the real engine is attached, then delegates."""

    def __init__(self) -> None:
        self.engine: AsyncEngine | None = None
        self.failure: str | None = None

    def _require(self) -> AsyncEngine:
        if self.engine is None:
            raise ModelLoadingError(self.failure or "the model is still loading; retry shortly")
        return self.engine

    @property
    def format(self) -> ChatFormat:
        return self._require().format

    @property
    def max_model_len(self) -> int:
        return self._require().max_model_len

    @property
    def generation_defaults(self) -> dict[str, Any]:
        return self._require().generation_defaults

    @property
    def is_ready(self) -> bool:
        return self.engine is not None and self.engine.is_ready

    def generate(
        self, prompt_ids: list[int], params: SamplingParams, request_id: str
    ) -> AsyncIterator[RequestOutput]:
        return self._require().generate(prompt_ids, params, request_id)

    async def abort(self, request_id: str) -> None:
        if self.engine is not None:
            await self.engine.abort(request_id)

    def stats(self) -> EngineStats:
        return self.engine.stats() if self.engine is not None else EngineStats()


def load_engine(config: EngineConfig) -> tuple[AsyncEngine, str]:
    """Load the checkpoint, start the engine thread, print what was loaded."""
    from glm_api.engine.async_engine import AsyncEngine
    from glm_api.models.loader import load_model

    loaded = load_model(config.model, config)
    engine = AsyncEngine.from_loaded(loaded, config)
    engine.start()
    name = config.served_model_name or loaded.name
    log.info(
        "loaded %s (%s) on %s in %s: %.1f MiB of weights%s; context %d tokens, %d KV slots (%s)",
        name,
        loaded.format.name,
        loaded.device,
        str(loaded.dtype).removeprefix("torch."),
        loaded.num_weight_bytes / 2**20,
        f", {config.quantize.value}" if config.quantize.value != "none" else "",
        engine.max_model_len,
        engine.num_slots,
        str(engine.cache.dtype).removeprefix("torch."),
    )
    if config.model is None:
        log.warning(DEMO_WARNING)
    return engine, name


def served_chat_name(settings: ServerSettings) -> str:
    if settings.served_model_name:
        return settings.served_model_name
    if settings.model is None:
        return "glm-demo"
    return settings.model.rstrip("/").split("/")[-1]


def create_app(settings: ServerSettings) -> FastAPI:
    """The whole server as an ASGI app; the model loads when the app starts."""
    from glm_api.embeddings.service import EmbeddingService
    from glm_api.http.app import build_app

    pending = PendingEngine()
    embeddings = EmbeddingService.from_specs(settings.embedding_model)
    config = settings.engine_config()
    name = served_chat_name(settings)
    config.served_model_name = name
    app = build_app(settings, pending, embeddings, name, ready=lambda: pending.is_ready)

    def load() -> None:
        try:
            pending.engine, _ = load_engine(config)
        except Exception as exc:  # the server stays up and says why on every request
            pending.failure = f"the model failed to load: {exc}"
            log.error(pending.failure)
        # what is loaded now lives as long as the server: out of the cyclic collector's
        # sight, so its collections during decode steps stop walking it (perf: 3% of a
        # 16-stream step was gc_collect_main and its visitors)
        gc.collect()
        gc.freeze()

    @asynccontextmanager
    async def lifespan(_: Any) -> AsyncIterator[None]:
        thread = threading.Thread(target=load, name="glm-load", daemon=True)
        thread.start()
        try:
            yield
        finally:
            await asyncio.to_thread(thread.join)
            if pending.engine is not None:
                await asyncio.to_thread(pending.engine.shutdown)
            embeddings.close()

    app.router.lifespan_context = lifespan
    return app


def serve(settings: ServerSettings) -> None:
    import uvicorn

    logging.basicConfig(level=settings.log_level.upper(), format="%(levelname)s %(message)s")
    app = create_app(settings)
    host = f"[{settings.host}]" if ":" in settings.host else settings.host
    log.info("GLM API listening on http://%s:%d (OpenAI base URL: /v1)", host, settings.port)
    uvicorn.run(app, host=settings.host, port=settings.port, log_level=settings.log_level)
