"""Pydantic models of the OpenAI completions, embeddings and models APIs.

Chat lives in protocol/openai.py; the shared sampling fields come from there too.
"""

from __future__ import annotations

import time
from typing import Any, Literal, cast

from pydantic import BaseModel, Field, field_validator, model_validator

from glm_api.engine.request import SamplingParams
from glm_api.protocol.base import RequestBody
from glm_api.protocol.openai import FinishReasonName, SamplingFields, StreamOptions, UsageInfo

PromptInput = str | list[str] | list[int] | list[list[int]]
#: engine requests one completions request may start (prompts x n): more would fill the
#: server's queue (256 by default) for everyone else, and could never all be admitted
MAX_CHOICES = 128


def _no_empty_lists(value: PromptInput) -> PromptInput:
    """An empty list or id list is an error, not silently skipped."""
    if isinstance(value, list) and (not value or any(item == [] for item in value)):
        raise ValueError("must not be empty")
    return value


def _no_empty_input(value: PromptInput) -> PromptInput:
    """Embeddings also refuse empty texts (as OpenAI does); a completion may start from ""."""
    items = [value] if isinstance(value, str) else value
    if any(item == "" for item in items):
        raise ValueError("must not contain empty strings")
    return _no_empty_lists(value)


class CompletionRequest(SamplingFields):
    model: str
    prompt: PromptInput
    best_of: int | None = Field(default=None, ge=1)
    echo: bool = False
    logit_bias: dict[str, float] | None = None
    logprobs: int | None = Field(default=None, ge=0, le=5)
    max_tokens: int | None = Field(default=16, ge=1)
    n: int = Field(default=1, ge=1, le=16)
    stream: bool = False
    stream_options: StreamOptions | None = None
    suffix: str | None = None
    user: str | None = None

    _check_prompt = field_validator("prompt")(_no_empty_lists)

    @model_validator(mode="after")
    def _check_supported(self) -> CompletionRequest:
        if self.suffix:
            raise ValueError("suffix is not supported")
        if self.logit_bias:
            raise ValueError("logit_bias is not supported")
        if self.best_of is not None and self.best_of != self.n:
            raise ValueError("best_of other than n is not supported")
        if self.echo and self.logprobs is not None:
            raise ValueError("echo together with logprobs is not supported")
        if self.stream_options is not None and not self.stream:
            raise ValueError("stream_options is only allowed when stream is true")
        num_prompts = len(self.prompt_items())
        if num_prompts * self.n > MAX_CHOICES:
            raise ValueError(
                f"this request asks for {num_prompts * self.n} completions ({num_prompts} "
                f"prompts x n={self.n}); at most {MAX_CHOICES} per request"
            )
        return self

    def prompt_items(self) -> list[str] | list[list[int]]:
        """The prompt as a list of texts or a list of id lists."""
        if isinstance(self.prompt, str):
            return [self.prompt]
        if all(isinstance(item, int) for item in self.prompt):
            return [cast(list[int], list(self.prompt))]
        return cast("list[str] | list[list[int]]", list(self.prompt))

    def to_sampling_params(self, defaults: dict[str, Any]) -> SamplingParams:
        return self.sampling_params(defaults, self.max_tokens, self.logprobs)


class CompletionLogprobs(BaseModel):
    text_offset: list[int] = Field(default_factory=list)
    token_logprobs: list[float | None] = Field(default_factory=list)
    tokens: list[str] = Field(default_factory=list)
    top_logprobs: list[dict[str, float] | None] = Field(default_factory=list)


class CompletionChoice(BaseModel):
    index: int
    text: str
    logprobs: CompletionLogprobs | None = None
    finish_reason: FinishReasonName | None = None


class CompletionResponse(BaseModel):
    id: str
    object: Literal["text_completion"] = "text_completion"
    created: int = Field(default_factory=lambda: int(time.time()))
    model: str
    choices: list[CompletionChoice]
    usage: UsageInfo | None = None


# ---------------------------------------------------------------- embeddings


class EmbeddingRequest(RequestBody):
    input: PromptInput
    model: str
    encoding_format: Literal["float", "base64"] = "float"
    dimensions: int | None = Field(default=None, ge=1)
    user: str | None = None
    # --- extras beyond the OpenAI reference ---
    truncate: bool = False

    _check_input = field_validator("input")(_no_empty_input)

    def input_items(self) -> list[str] | list[list[int]]:
        if isinstance(self.input, str):
            return [self.input]
        if all(isinstance(item, int) for item in self.input):
            return [cast(list[int], list(self.input))]
        return cast("list[str] | list[list[int]]", list(self.input))


class EmbeddingData(BaseModel):
    object: Literal["embedding"] = "embedding"
    embedding: list[float] | str
    index: int


class EmbeddingUsage(BaseModel):
    prompt_tokens: int
    total_tokens: int


class EmbeddingResponse(BaseModel):
    object: Literal["list"] = "list"
    data: list[EmbeddingData]
    model: str
    usage: EmbeddingUsage


# ---------------------------------------------------------------- models


class ModelCard(BaseModel):
    id: str
    object: Literal["model"] = "model"
    created: int = Field(default_factory=lambda: int(time.time()))
    owned_by: str = "glm-api"
    # --- extras beyond the OpenAI reference ---
    type: Literal["chat", "embedding"] = "chat"
    max_model_len: int | None = None


class ModelList(BaseModel):
    object: Literal["list"] = "list"
    data: list[ModelCard]
