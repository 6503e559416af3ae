"""serving/chat.py against the fake engine: what crosses the boundary, and what comes back."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from typing import Any

import pytest

from glm_api.engine.errors import PromptTooLongError
from glm_api.protocol.openai import ChatCompletionRequest, ChatCompletionStreamResponse
from glm_api.serving.chat import ChatService
from glm_api.serving.models import ModelNotFoundError, ServedModels
from tests.fakes import FakeChatFormat, FakeEngine, ids_of

MODEL = "glm-test"


def make(engine: FakeEngine) -> ChatService:
    return ChatService(engine, ServedModels(MODEL, engine, None))


def request(**fields: Any) -> ChatCompletionRequest:
    body = {"model": MODEL, "messages": [{"role": "user", "content": "Hi"}], **fields}
    return ChatCompletionRequest.model_validate(body)


async def drain(events: AsyncIterator[str]) -> list[dict[str, Any]]:
    return [json.loads(e) async for e in events]


def test_prompt_ids_and_sampling_params_cross_the_boundary() -> None:
    engine = FakeEngine()
    req = request(
        messages=[
            {"role": "system", "content": "Be brief."},
            {"role": "user", "content": [{"type": "text", "text": "Hi"}]},
        ],
        temperature=0.3,
        stop="\n",
        seed=7,
        max_tokens=5,
        presence_penalty=0.5,
        top_k=-1,
        repetition_penalty=1.1,
        stop_token_ids=[9],
        min_tokens=2,
        ignore_eos=True,
    )
    response = asyncio.run(make(engine).create(req, "chatcmpl-x"))
    (call,) = engine.calls
    assert call.prompt_ids == [1, 2, 4, *ids_of("Be brief."), 5, *ids_of("Hi"), 6]
    assert call.request_id == "chatcmpl-x-0"
    p = call.params
    assert (p.temperature, p.top_p, p.top_k) == (0.3, 0.8, 0)  # unset -> generation defaults
    assert (p.stop, p.seed, p.max_tokens, p.presence_penalty) == (["\n"], 7, 5, 0.5)
    assert (p.repetition_penalty, p.stop_token_ids, p.min_tokens, p.ignore_eos) == (
        1.1,
        [9],
        2,
        True,
    )
    assert p.logprobs is None
    assert response.choices[0].message.content == "Hello"
    assert response.choices[0].finish_reason == "length"
    assert response.usage.model_dump() == {
        "prompt_tokens": 16,
        "completion_tokens": 5,
        "total_tokens": 21,
        "prompt_tokens_details": {"cached_tokens": 0},
    }


def test_max_completion_tokens_wins_and_is_capped_by_the_context() -> None:
    engine = FakeEngine(max_model_len=10)
    asyncio.run(make(engine).create(request(max_completion_tokens=100, max_tokens=3), "c"))
    assert engine.calls[0].params.max_tokens == 10 - 6  # prompt [1,2,5,H,i,6]


def test_prompt_that_fills_the_context_is_refused_before_the_engine() -> None:
    engine = FakeEngine(max_model_len=6)
    with pytest.raises(PromptTooLongError):
        asyncio.run(make(engine).create(request(), "c"))
    assert engine.calls == []


def test_unknown_model_is_404() -> None:
    with pytest.raises(ModelNotFoundError) as info:
        asyncio.run(make(FakeEngine()).create(request(model="gpt-4"), "c"))
    assert (info.value.status_code, info.value.code) == (404, "model_not_found")


def test_n_fans_out_with_ids_and_seeds() -> None:
    engine = FakeEngine(reply=lambda call: call.request_id[-1] * 3)
    response = asyncio.run(make(engine).create(request(n=3, seed=10), "r"))
    assert [c.request_id for c in engine.calls] == ["r-0", "r-1", "r-2"]
    assert [c.params.seed for c in engine.calls] == [10, 11, 12]
    assert [c.message.content for c in response.choices] == ["000", "111", "222"]
    assert response.usage.completion_tokens == 9
    assert response.usage.prompt_tokens == 6  # counted once


def test_tools_reach_the_prompt_and_the_reply_becomes_tool_calls() -> None:
    engine = FakeEngine(reply=lambda call: 'CALL get_weather {"city": "Paris"}', max_model_len=256)
    tool = {
        "type": "function",
        "function": {"name": "get_weather", "parameters": {"type": "object"}},
    }
    response = asyncio.run(make(engine).create(request(tools=[tool]), "t"))
    assert engine.calls[0].prompt_ids[:3] == [1, 2, 4]
    assert ids_of(json.dumps([tool], sort_keys=True)) == engine.calls[0].prompt_ids[3:-4]
    choice = response.choices[0]
    assert choice.finish_reason == "tool_calls"
    assert choice.message.content is None
    (call,) = choice.message.tool_calls
    assert (call.function.name, call.function.arguments) == ("get_weather", '{"city": "Paris"}')
    assert call.id.startswith("call_")


def test_tool_choice_none_hides_tools_and_tool_results_get_their_function_name() -> None:
    engine = FakeEngine()
    tool = {"type": "function", "function": {"name": "f"}}
    messages = [
        {"role": "user", "content": "x"},
        {
            "role": "assistant",
            "tool_calls": [
                {"id": "c1", "type": "function", "function": {"name": "f", "arguments": "{}"}}
            ],
        },
        {"role": "tool", "tool_call_id": "c1", "content": "42"},
    ]
    asyncio.run(
        make(engine).create(request(messages=messages, tools=[tool], tool_choice="none"), "t")
    )
    expected = [1, 2, 5, *ids_of("x"), 6, *ids_of("CALL f {}"), 7, *ids_of("f:42"), 6]
    assert engine.calls[0].prompt_ids == expected


def test_logprobs_in_chat_shape() -> None:
    engine = FakeEngine(reply=lambda call: "ab")
    response = asyncio.run(make(engine).create(request(logprobs=True, top_logprobs=2), "l"))
    assert engine.calls[0].params.logprobs == 2
    logprobs = response.choices[0].logprobs
    assert logprobs is not None and logprobs.content is not None
    content = logprobs.content
    assert [(e.token, e.logprob) for e in content] == [("a", -0.5), ("b", -0.5)]
    assert [(t.token, t.logprob) for t in content[0].top_logprobs] == [("a", -0.5), ("b", -1.5)]
    assert content[0].bytes == [97]


def test_stream_chunks_role_content_finish_usage() -> None:
    engine = FakeEngine(reply=lambda call: "Hey")
    service = make(engine)
    req = request(stream=True, stream_options={"include_usage": True})
    chunks = asyncio.run(drain_stream(service, req))
    for chunk in chunks:
        ChatCompletionStreamResponse.model_validate(chunk)
    assert chunks[0]["choices"][0]["delta"] == {"role": "assistant", "content": ""}
    assert chunks[1]["choices"][0]["delta"] == {"content": "H"}
    assert chunks[-2]["choices"][0]["delta"] == {}
    text = "".join(c["choices"][0]["delta"].get("content", "") for c in chunks if c["choices"])
    assert text == "Hey"
    assert chunks[-2]["choices"][0]["finish_reason"] == "stop"
    assert chunks[-1]["choices"] == []
    assert chunks[-1]["usage"] == {
        "prompt_tokens": 6, "completion_tokens": 3, "total_tokens": 9,
        "prompt_tokens_details": {"cached_tokens": 0},
    }  # fmt: skip
    assert all(c["usage"] is None for c in chunks[:-1])


async def drain_stream(service: ChatService, req: ChatCompletionRequest) -> list[dict[str, Any]]:
    return await drain(await service.create_stream(req, "s"))


def test_stream_without_usage_has_no_usage_field() -> None:
    chunks = asyncio.run(drain_stream(make(FakeEngine()), request(stream=True)))
    assert all("usage" not in c for c in chunks)


def test_stream_with_tools_sends_tool_calls_as_one_delta() -> None:
    engine = FakeEngine(reply=lambda call: "CALL f {}")
    req = request(stream=True, tools=[{"type": "function", "function": {"name": "f"}}])
    chunks = asyncio.run(drain_stream(make(engine), req))
    assert len(chunks) == 3  # role, tool call, finish
    (delta_call,) = chunks[1]["choices"][0]["delta"]["tool_calls"]
    assert delta_call["index"] == 0 and delta_call["function"] == {"name": "f", "arguments": "{}"}
    assert chunks[2]["choices"][0]["finish_reason"] == "tool_calls"


def test_closing_a_stream_closes_the_engine_iterators() -> None:
    async def scenario() -> FakeEngine:
        engine = FakeEngine(hold=asyncio.Event())
        events = await make(engine).create_stream(request(stream=True, n=2), "d")
        assert json.loads(await anext(events))["choices"][0]["delta"]["role"] == "assistant"
        await anext(events)
        await anext(events)
        await events.aclose()  # type: ignore[attr-defined]
        return engine

    engine = asyncio.run(scenario())
    assert sorted(engine.closed) == ["d-0", "d-1"]
    assert engine.finished == []


def test_opening_newline_of_a_glm_reply_is_dropped_streamed_or_not() -> None:
    """ChatGLM3/GLM-4 answer `\\n` first (the end of the metadata line): not part of the text."""
    fmt = FakeChatFormat()
    fmt.strips_reply_start = True
    engine = FakeEngine(reply=lambda call: "\n Hi there ", format=fmt)
    service = make(engine)
    whole = asyncio.run(service.create(request(), "chatcmpl-1"))
    assert whole.choices[0].message.content == "Hi there "
    chunks = asyncio.run(drain_stream(service, request(stream=True)))
    deltas = [c["choices"][0]["delta"].get("content") or "" for c in chunks if c["choices"]]
    assert "".join(deltas) == "Hi there "
