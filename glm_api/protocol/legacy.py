"""Pydantic models of the original GLM API routes and of ChatGLM-6B's `api.py`.

/chat, /chat-stream, /tokenize, /embedding, /models and POST / keep the exact field names
their existing clients send and read (`max_length`, `tokenIds`, `history` as lists).
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, Field, field_validator

from glm_api.engine.request import SamplingParams
from glm_api.protocol.base import RequestBody
from glm_api.protocol.openai import ChatMessageParam


def history_pairs(history: list[list[str]]) -> list[tuple[str, str]]:
    """[[q, a], ...] and the TypeScript client's flat [[q1, a1, q2, a2, ...]] as pairs."""
    pairs: list[tuple[str, str]] = []
    for turn in history:
        for i in range(0, len(turn), 2):
            pairs.append((turn[i], turn[i + 1]))
    return pairs


class LegacyChatRequest(RequestBody):
    prompt: str
    history: list[list[str]] = Field(default_factory=list)
    max_length: int = Field(default=4096, ge=1)
    top_p: float = Field(default=0.7, gt=0.0, le=1.0)
    temperature: float = Field(default=0.95, ge=0.0, le=2.0)

    @field_validator("history")
    @classmethod
    def _even_turns(cls, value: list[list[str]]) -> list[list[str]]:
        if any(len(turn) % 2 for turn in value):
            raise ValueError("each history entry must hold question/answer pairs")
        return value

    def to_sampling_params(self, max_tokens: int) -> SamplingParams:
        """`max_length` counts prompt + answer, so the caller passes what is left."""
        return SamplingParams(temperature=self.temperature, top_p=self.top_p, max_tokens=max_tokens)


class LegacyChatResponse(BaseModel):
    content: str
    prompt_tokens: int
    completion_tokens: int
    total_tokens: int
    model: str
    object: Literal["chat.completion"] = "chat.completion"
    finish_reason: str | None = None


class ApiChatRequest(LegacyChatRequest):
    """ChatGLM-6B's api.py: the same knobs with its own default length."""

    max_length: int = Field(default=2048, ge=1)


class ApiChatResponse(BaseModel):
    response: str
    history: list[list[str]]
    status: int = 200
    time: str


class TokenizeRequest(RequestBody):
    prompt: str | None = None
    messages: list[ChatMessageParam] | None = None
    max_length: int | None = Field(default=None, ge=1)

    @field_validator("messages")
    @classmethod
    def _not_empty(cls, value: list[ChatMessageParam] | None) -> list[ChatMessageParam] | None:
        if value is not None and not value:
            raise ValueError("messages must not be empty")
        return value


class TokenizeResponse(BaseModel):
    tokenIds: list[int]  # noqa: N815 - the original API's field name
    tokens: list[str]
    model: str
    object: Literal["tokenizer"] = "tokenizer"


class LegacyEmbeddingRequest(RequestBody):
    prompt: str | list[str]
    model: str | None = None

    def texts(self) -> list[str]:
        return [self.prompt] if isinstance(self.prompt, str) else list(self.prompt)


class LegacyEmbeddingResponse(BaseModel):
    data: list[list[float]]
    model: str
    object: Literal["embedding"] = "embedding"


class LegacyModelEntry(BaseModel):
    id: str
    type: Literal["chat", "embedding"]
    max_length: int | None  # None while the model is still loading
    dimension: int | None = None
    languages: str | None = None
    pooling: str | None = None
    normalized: bool | None = None


class LegacyModelList(BaseModel):
    data: list[LegacyModelEntry]
    object: Literal["list"] = "list"
