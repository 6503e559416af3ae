"""The original GLM API routes (/chat, /chat-stream, /tokenize, /embedding, /models) and
ChatGLM-6B api.py's POST /, with the field names their existing clients use.

/chat-stream sends no `data: [DONE]`: its clients JSON.parse every event, and the last
event already says it is the last (it carries `finish_reason`); then the stream closes.
"""

from __future__ import annotations

from fastapi import APIRouter, Depends, Request
from starlette.responses import Response

from glm_api.http.auth import require_api_key
from glm_api.http.deps import run_cancellable, services
from glm_api.http.sse import sse_response
from glm_api.protocol.legacy import (
    ApiChatRequest,
    ApiChatResponse,
    LegacyChatRequest,
    LegacyChatResponse,
    LegacyEmbeddingRequest,
    LegacyEmbeddingResponse,
    LegacyModelList,
    TokenizeRequest,
    TokenizeResponse,
)

router = APIRouter(dependencies=[Depends(require_api_key)])


@router.post("/chat", response_model_exclude_none=True)
async def chat(body: LegacyChatRequest, request: Request) -> LegacyChatResponse:
    state = services(request)
    legacy = state.need(state.legacy, state.models.chat_model)
    return await run_cancellable(request, legacy.chat(body))


@router.post("/chat-stream")
async def chat_stream(body: LegacyChatRequest, request: Request) -> Response:
    state = services(request)
    legacy = state.need(state.legacy, state.models.chat_model)
    return sse_response(await legacy.chat_stream(body), send_done=False)


@router.post("/tokenize")
async def tokenize(body: TokenizeRequest, request: Request) -> TokenizeResponse:
    state = services(request)
    return state.need(state.tokenize, state.models.chat_model).tokenize(body)


@router.post("/embedding")
async def embedding(body: LegacyEmbeddingRequest, request: Request) -> LegacyEmbeddingResponse:
    return await services(request).embeddings.create_legacy(body)


@router.get("/models")
async def models(request: Request) -> LegacyModelList:
    return services(request).models.legacy_list()


@router.post("/")
async def api_chat(body: ApiChatRequest, request: Request) -> ApiChatResponse:
    state = services(request)
    legacy = state.need(state.legacy, state.models.chat_model)
    return await run_cancellable(request, legacy.api_chat(body))
