"""The original GLM API's /chat and /chat-stream, and ChatGLM-6B api.py's POST /.

`max_length` counts prompt and answer together, as ChatGLM's `model.chat` did: the engine
gets `max_tokens = max_length - prompt length`, and a prompt that fills it is a 400.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass

from glm_api.engine.errors import InvalidRequestError
from glm_api.engine.protocol import EngineClient
from glm_api.engine.request import RequestOutput, SamplingParams
from glm_api.protocol.legacy import (
    ApiChatRequest,
    ApiChatResponse,
    LegacyChatRequest,
    LegacyChatResponse,
    history_pairs,
)
from glm_api.serving.streams import collect, fit_max_tokens, open_streams


@dataclass(slots=True)
class _Job:
    prompt_ids: list[int]
    params: SamplingParams
    request_id: str


class LegacyChatService:
    def __init__(self, engine: EngineClient, model_name: str):
        self.engine = engine
        self.model_name = model_name

    def _prepare(self, request: LegacyChatRequest) -> _Job:
        pairs = history_pairs(request.history)
        prompt_ids = self.engine.format.legacy_prompt(request.prompt, pairs)
        if len(prompt_ids) >= request.max_length:
            raise InvalidRequestError(
                f"The prompt has {len(prompt_ids)} tokens, which leaves no room for an answer "
                f"within max_length={request.max_length}.",
                param="max_length",
                code="context_length_exceeded",
            )
        room = request.max_length - len(prompt_ids)
        max_tokens = fit_max_tokens(self.engine, len(prompt_ids), room, "prompt")
        assert max_tokens is not None
        params = request.to_sampling_params(max_tokens)
        return _Job(prompt_ids, params, f"chat-{uuid.uuid4().hex}")

    def _response(
        self, content: str, output: RequestOutput, finished: bool = False
    ) -> LegacyChatResponse:
        reason = output.finish_reason.value if finished and output.finish_reason else None
        return LegacyChatResponse(
            content=content,
            prompt_tokens=output.num_prompt_tokens,
            completion_tokens=output.num_generated_tokens,
            total_tokens=output.num_prompt_tokens + output.num_generated_tokens,
            model=self.model_name,
            finish_reason=reason,
        )

    async def chat(self, request: LegacyChatRequest) -> LegacyChatResponse:
        job = self._prepare(request)
        streams = await open_streams(
            self.engine, [(job.prompt_ids, job.params, job.request_id)], is_reply=True
        )
        (result,) = await collect(streams)
        return LegacyChatResponse(
            content=result.text,
            prompt_tokens=result.num_prompt_tokens,
            completion_tokens=result.num_generated_tokens,
            total_tokens=result.num_prompt_tokens + result.num_generated_tokens,
            model=self.model_name,
            finish_reason=result.finish_reason.value if result.finish_reason else None,
        )

    async def chat_stream(self, request: LegacyChatRequest) -> AsyncIterator[str]:
        """Starts the request now (errors raise here); returns the events' JSON."""
        job = self._prepare(request)
        (stream,) = await open_streams(
            self.engine, [(job.prompt_ids, job.params, job.request_id)], is_reply=True
        )
        return self._events(stream)

    async def _events(self, stream: AsyncIterator[RequestOutput]) -> AsyncIterator[str]:
        """Each event carries the whole answer so far; the last one its finish_reason."""
        content = ""
        async for output in stream:
            content += output.new_text
            if output.new_text or output.is_finished:
                yield self._response(content, output, output.is_finished).model_dump_json(
                    exclude_none=True
                )

    async def api_chat(self, request: ApiChatRequest) -> ApiChatResponse:
        """ChatGLM-6B api.py: answer, the history grown by this turn, and a local time."""
        answer = await self.chat(request)
        history = [list(pair) for pair in history_pairs(request.history)]
        history.append([request.prompt, answer.content])
        return ApiChatResponse(
            response=answer.content,
            history=history,
            time=time.strftime("%Y-%m-%d %H:%M:%S"),
        )
