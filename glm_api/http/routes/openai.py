"""The OpenAI routes: /v1/chat/completions, /v1/completions, /v1/models, /v1/embeddings.

Thin: parse (FastAPI + protocol/), hand to serving/, answer JSON or SSE.
"""

from __future__ import annotations

import uuid

from fastapi import APIRouter, Depends, Request
from starlette.responses import Response

from glm_api.http.auth import require_api_key
from glm_api.http.deps import run_cancellable, services
from glm_api.http.sse import sse_response
from glm_api.protocol.openai import ChatCompletionRequest, ChatCompletionResponse
from glm_api.protocol.openai_misc import (
    CompletionRequest,
    CompletionResponse,
    EmbeddingRequest,
    EmbeddingResponse,
    ModelCard,
    ModelList,
)

router = APIRouter(prefix="/v1", dependencies=[Depends(require_api_key)])


@router.post("/chat/completions", response_model=None)
async def create_chat_completion(
    body: ChatCompletionRequest, request: Request
) -> ChatCompletionResponse | Response:
    state = services(request)
    chat = state.need(state.chat, body.model)
    response_id = f"chatcmpl-{uuid.uuid4().hex}"
    if body.stream:
        return sse_response(await chat.create_stream(body, response_id), send_done=True)
    return await run_cancellable(request, chat.create(body, response_id))


@router.post("/completions", response_model=None)
async def create_completion(
    body: CompletionRequest, request: Request
) -> CompletionResponse | Response:
    state = services(request)
    completions = state.need(state.completions, body.model)
    response_id = f"cmpl-{uuid.uuid4().hex}"
    if body.stream:
        return sse_response(await completions.create_stream(body, response_id), send_done=True)
    return await run_cancellable(request, completions.create(body, response_id))


@router.get("/models")
async def list_models(request: Request) -> ModelList:
    return services(request).models.openai_list()


@router.get("/models/{model_id:path}")
async def retrieve_model(model_id: str, request: Request) -> ModelCard:
    return services(request).models.openai_card(model_id)


@router.post("/embeddings")
async def create_embedding(body: EmbeddingRequest, request: Request) -> EmbeddingResponse:
    return await services(request).embeddings.create(body)
