"""serving/legacy.py: max_length arithmetic, history shapes, /chat-stream events."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest

from glm_api.engine.errors import InvalidRequestError, PromptTooLongError
from glm_api.protocol.legacy import ApiChatRequest, LegacyChatRequest, history_pairs
from glm_api.serving.legacy import LegacyChatService
from tests.fakes import FakeEngine, ids_of


def chat(engine: FakeEngine, **fields: Any) -> Any:
    request = LegacyChatRequest.model_validate({"prompt": "Hi", **fields})
    return asyncio.run(LegacyChatService(engine, "glm-test").chat(request))


def test_defaults_and_max_tokens_left_after_the_prompt() -> None:
    engine = FakeEngine(max_model_len=4096 * 2)
    response = chat(engine)
    (call,) = engine.calls
    assert call.prompt_ids == [1, 2, 5, *ids_of("Hi"), 6]
    assert (call.params.temperature, call.params.top_p) == (0.95, 0.7)
    assert call.params.max_tokens == 4096 - 6
    assert response.model_dump() == {
        "content": "Hello world!",
        "prompt_tokens": 6,
        "completion_tokens": 12,
        "total_tokens": 18,
        "model": "glm-test",
        "object": "chat.completion",
        "finish_reason": "stop",
    }


def test_max_length_counts_prompt_and_answer() -> None:
    engine = FakeEngine()
    response = chat(engine, max_length=10, temperature=0, top_p=1)
    assert engine.calls[0].params.max_tokens == 4
    assert (engine.calls[0].params.temperature, engine.calls[0].params.top_p) == (0, 1)
    assert response.content == "Hell"
    assert response.finish_reason == "length"


def test_prompt_filling_max_length_is_400() -> None:
    with pytest.raises(InvalidRequestError) as info:
        chat(FakeEngine(), max_length=6)
    assert (info.value.status_code, info.value.param) == (400, "max_length")


def test_max_length_beyond_the_model_is_capped_and_a_huge_prompt_refused() -> None:
    engine = FakeEngine(max_model_len=20)
    chat(engine, max_length=4096)
    assert engine.calls[0].params.max_tokens == 14
    with pytest.raises(PromptTooLongError):
        chat(engine, prompt="x" * 30)


def test_both_history_shapes_build_the_same_prompt() -> None:
    pairs = history_pairs([["q1", "a1"], ["q2", "a2"]])
    assert pairs == history_pairs([["q1", "a1", "q2", "a2"]]) == [("q1", "a1"), ("q2", "a2")]
    engine = FakeEngine(max_model_len=100)
    chat(engine, history=[["q1", "a1", "q2", "a2"]])
    chat(engine, history=[["q1", "a1"], ["q2", "a2"]])
    expected = [1, 2, 5, *ids_of("q1"), 6, *ids_of("a1"), 5, *ids_of("q2"), 6, *ids_of("a2")]
    assert (
        engine.calls[0].prompt_ids == engine.calls[1].prompt_ids == [*expected, 5, *ids_of("Hi"), 6]
    )


def test_stream_events_carry_the_whole_answer_so_far() -> None:
    async def scenario() -> list[dict[str, Any]]:
        service = LegacyChatService(FakeEngine(reply=lambda c: "abc"), "m")
        events = await service.chat_stream(LegacyChatRequest(prompt="Hi"))
        return [json.loads(e) async for e in events]

    events = asyncio.run(scenario())
    assert [e["content"] for e in events] == ["a", "ab", "abc"]
    assert [e.get("finish_reason") for e in events] == [None, None, "stop"]
    assert events[-1]["completion_tokens"] == 3 and events[-1]["object"] == "chat.completion"


def test_api_chat_grows_the_history() -> None:
    request = ApiChatRequest(prompt="Hi", history=[["q", "a"]])
    response = asyncio.run(LegacyChatService(FakeEngine(), "m").api_chat(request))
    assert response.response == "Hello world!"
    assert response.history == [["q", "a"], ["Hi", "Hello world!"]]
    assert response.status == 200 and len(response.time) == 19
