"""`build_app(settings, engine, embeddings, model_name)`: the FastAPI app, wired once.

It builds the serving objects, installs the error handlers (every failure in the OpenAI
error shape), auth keys, optional CORS, and the routers. It never loads a model: the CLI
does, and passes the engine (None: embeddings only) and a `ready` callable for /health.
"""

from __future__ import annotations

from collections.abc import Callable

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.middleware.cors import CORSMiddleware
from starlette.exceptions import HTTPException
from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from glm_api.config import ServerSettings
from glm_api.embeddings.base import EmbeddingClient
from glm_api.engine.errors import EngineError
from glm_api.engine.protocol import EngineClient
from glm_api.http.auth import load_api_keys
from glm_api.http.deps import Services
from glm_api.http.errors import BodyTooLargeError, error_for
from glm_api.http.metrics import Metrics
from glm_api.http.routes import legacy, openai, web
from glm_api.serving.chat import ChatService
from glm_api.serving.completions import CompletionService
from glm_api.serving.embeddings import EmbeddingService
from glm_api.serving.legacy import LegacyChatService
from glm_api.serving.models import ServedModels
from glm_api.serving.tokenize import TokenizeService


def _error_json(exc: Exception) -> JSONResponse:
    status, body = error_for(exc)
    return JSONResponse(body.model_dump(), status_code=status)


async def _handle(request: Request, exc: Exception) -> JSONResponse:
    return _error_json(exc)


class CatchUnexpected:
    """Turns an exception no handler took into a logged 500 in the OpenAI shape.

    (Starlette's own catch-all re-raises after answering, which test clients report as a
    crash; here it is an answer like any other.)
    """

    def __init__(self, app: ASGIApp):
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = False

        async def send_tracked(message: Message) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, receive, send_tracked)
        except Exception as exc:
            response = _error_json(exc)  # logs it
            if not started:
                await response(scope, receive, send)


#: the largest request body read (a 128K-token prompt is well under 1 MiB of text; 2,048
#: embedding inputs of 8K characters are 16 MiB): more is refused before it is parsed
MAX_BODY_BYTES = 32 * 1024 * 1024


class LimitBody:
    """A 413 for a body over `limit`: by its Content-Length before anything is read, or, sent
    chunked, as soon as the bytes received pass it (CatchUnexpected answers the error)."""

    def __init__(self, app: ASGIApp, limit: int = MAX_BODY_BYTES):
        self.app, self.limit = app, limit

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        length = dict(scope.get("headers") or []).get(b"content-length", b"").strip()
        if length.isdigit() and int(length) > self.limit:
            await _error_json(BodyTooLargeError(self.limit))(scope, receive, send)
            return
        received = 0

        async def counted() -> Message:
            nonlocal received
            message = await receive()
            received += len(message.get("body", b""))
            if received > self.limit:
                raise BodyTooLargeError(self.limit)
            return message

        await self.app(scope, counted, send)


def _services(
    engine: EngineClient | None,
    embeddings: EmbeddingClient | None,
    model_name: str,
    ready: Callable[[], bool] | None,
) -> Services:
    models = ServedModels(model_name, engine, embeddings)
    if ready is None:
        ready = (lambda: engine.is_ready) if engine is not None else (lambda: True)
    state = Services(models, EmbeddingService(embeddings), Metrics(engine), ready)
    if engine is not None:
        state.chat = ChatService(engine, models)
        state.completions = CompletionService(engine, models)
        state.legacy = LegacyChatService(engine, model_name)
        state.tokenize = TokenizeService(engine, model_name)
    return state


def build_app(
    settings: ServerSettings,
    engine: EngineClient | None,
    embeddings: EmbeddingClient | None,
    model_name: str,
    ready: Callable[[], bool] | None = None,
) -> FastAPI:
    api_keys = load_api_keys(settings.api_key)
    # with keys set, only /health and the page stay open: no unauthenticated schema either
    docs = None if api_keys else "/docs"
    app = FastAPI(
        title="GLM API", docs_url=docs, redoc_url=None, openapi_url=docs and "/openapi.json"
    )
    app.state.services = _services(engine, embeddings, model_name, ready)
    app.state.api_keys = api_keys
    for exc_type in (EngineError, RequestValidationError, HTTPException):
        app.add_exception_handler(exc_type, _handle)
    app.add_middleware(CatchUnexpected)
    app.add_middleware(LimitBody)  # outermost: an oversized body is never read whole
    if settings.allowed_origins:
        app.add_middleware(
            CORSMiddleware,
            allow_origins=settings.allowed_origins,
            allow_methods=["*"],
            allow_headers=["*"],
        )
    app.include_router(web.router)
    app.include_router(openai.router)
    app.include_router(legacy.router)
    return app
