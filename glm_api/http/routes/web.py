"""GET / (the chat page), GET /health (no key needed) and GET /metrics.

The page is static apart from the served model's name; it asks for the API key in a field
and sends it as a bearer token itself, so loading the page needs no key.
"""

from __future__ import annotations

import functools
import html
from pathlib import Path

from fastapi import APIRouter, Depends, Request
from starlette.responses import HTMLResponse, JSONResponse, Response

from glm_api.http.auth import require_api_key
from glm_api.http.deps import services
from glm_api.protocol.errors import ErrorResponse

router = APIRouter()

PAGE = Path(__file__).resolve().parents[2] / "web" / "index.html"

PROMETHEUS_TEXT = "text/plain; version=0.0.4; charset=utf-8"


@router.api_route("/", methods=["GET", "HEAD"], response_class=HTMLResponse)
async def index(request: Request) -> HTMLResponse:
    model = services(request).models.chat_model or ""
    return HTMLResponse(_page().replace("__GLM_API_MODEL__", html.escape(model, quote=True)))


@functools.cache
def _page() -> str:
    return PAGE.read_text(encoding="utf-8")


@router.api_route("/health", methods=["GET", "HEAD"])  # HEAD: what uptime probes send
async def health(request: Request) -> JSONResponse:
    if services(request).ready():
        return JSONResponse({"status": "ok"})
    body = ErrorResponse.of("The model is still loading.", "service_unavailable", code="loading")
    return JSONResponse(body.model_dump(), status_code=503)


@router.get("/metrics", dependencies=[Depends(require_api_key)])
async def metrics(request: Request) -> Response:
    return Response(services(request).metrics.render(), media_type=PROMETHEUS_TEXT)
