"""serving/completions.py: prompt kinds, choice numbering, echo, logprob columns."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest

from glm_api.engine.errors import InvalidRequestError
from glm_api.protocol.openai_misc import CompletionRequest
from glm_api.serving.completions import CompletionService
from glm_api.serving.models import ServedModels
from tests.fakes import FakeEngine, ids_of


def service(engine: FakeEngine) -> CompletionService:
    return CompletionService(engine, ServedModels("m", engine, None))


def create(engine: FakeEngine, **fields: Any) -> Any:
    request = CompletionRequest.model_validate({"model": "m", **fields})
    return asyncio.run(service(engine).create(request, "cmpl"))


def test_text_prompt_with_specials_and_default_max_tokens() -> None:
    engine = FakeEngine()
    response = create(engine, prompt="Hi")
    assert engine.calls[0].prompt_ids == [1, 2, *ids_of("Hi")]
    assert engine.calls[0].params.max_tokens == 16
    assert response.choices[0].text == "Hello world!"
    assert response.usage.model_dump() == {
        "prompt_tokens": 4,
        "completion_tokens": 12,
        "total_tokens": 16,
        "prompt_tokens_details": {"cached_tokens": 0},
    }


def test_id_prompts_and_choice_numbering() -> None:
    engine = FakeEngine(reply=lambda call: call.request_id[-1])
    response = create(engine, prompt=[[200, 201], [202]], n=2, max_tokens=3)
    assert [c.prompt_ids for c in engine.calls] == [[200, 201], [200, 201], [202], [202]]
    assert [c.request_id for c in engine.calls] == ["cmpl-0", "cmpl-1", "cmpl-2", "cmpl-3"]
    assert [c.text for c in response.choices] == ["0", "1", "2", "3"]
    assert response.usage.prompt_tokens == 3


def test_flat_id_list_is_one_prompt_and_bad_ids_are_400() -> None:
    engine = FakeEngine()
    create(engine, prompt=[200, 201])
    assert engine.calls[0].prompt_ids == [200, 201]
    with pytest.raises(InvalidRequestError):
        create(engine, prompt=[-1])


def test_echo_and_logprob_columns() -> None:
    response = create(FakeEngine(reply=lambda c: "ab"), prompt="Q", echo=True)
    assert response.choices[0].text == "Qab"
    response = create(FakeEngine(reply=lambda c: "ab"), prompt="Q", logprobs=1)
    lp = response.choices[0].logprobs
    assert lp.tokens == ["a", "b"] and lp.token_logprobs == [-0.5, -0.5]
    assert lp.top_logprobs == [{"a": -0.5}, {"b": -0.5}] and lp.text_offset == [0, 1]


def test_stream_chunks_and_usage() -> None:
    async def scenario() -> list[dict[str, Any]]:
        request = CompletionRequest.model_validate(
            {"model": "m", "prompt": "Q", "stream": True, "stream_options": {"include_usage": True}}
        )
        events = await service(FakeEngine(reply=lambda c: "ab")).create_stream(request, "s")
        return [json.loads(e) async for e in events]

    chunks = asyncio.run(scenario())
    assert [c["choices"][0]["text"] for c in chunks[:2]] == ["a", "b"]
    assert chunks[1]["choices"][0]["finish_reason"] == "stop"
    assert chunks[2]["choices"] == [] and chunks[2]["usage"]["completion_tokens"] == 2
