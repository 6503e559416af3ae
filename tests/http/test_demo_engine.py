"""The app over the real AsyncEngine and the built-in demo model (tiny, random weights).

The fake-engine tests pin the shapes; this one checks the real engine fits the seam:
greedy answers agree between plain and streamed responses, and usage adds up.
"""

from __future__ import annotations

import json
from collections.abc import Iterator

import pytest
from fastapi.testclient import TestClient

from glm_api.config import EngineConfig, ServerSettings
from glm_api.engine.async_engine import AsyncEngine
from glm_api.http.app import build_app
from glm_api.models.demo import build_demo_model
from tests.http.helpers import assert_error, sse_data, sse_json

MODEL = "glm-demo"
USER = [{"role": "user", "content": "Hi"}]


@pytest.fixture(scope="module")
def client() -> Iterator[TestClient]:
    loaded = build_demo_model()
    config = EngineConfig(max_model_len=128, max_num_seqs=4, max_num_batched_tokens=64)
    engine = AsyncEngine(loaded.model, loaded.format, config, loaded.generation_defaults)
    try:
        with TestClient(build_app(ServerSettings(), engine, None, MODEL)) as test_client:
            yield test_client
    finally:
        engine.shutdown()


def test_greedy_chat_equals_its_stream(client: TestClient) -> None:
    body = {"model": MODEL, "messages": USER, "max_tokens": 6, "temperature": 0, "ignore_eos": True}
    plain = client.post("/v1/chat/completions", json=body).json()
    assert plain["choices"][0]["finish_reason"] == "length"
    assert plain["usage"]["completion_tokens"] == 6
    streamed = sse_json(
        client.post(
            "/v1/chat/completions",
            json={**body, "stream": True, "stream_options": {"include_usage": True}},
        ).text
    )
    text = "".join(c["choices"][0]["delta"].get("content", "") for c in streamed if c["choices"])
    assert text == plain["choices"][0]["message"]["content"]
    usage = streamed[-1]["usage"]
    details = usage.pop("prompt_tokens_details")
    assert usage == {k: v for k, v in plain["usage"].items() if k != "prompt_tokens_details"}
    # the same prompt again: prefix caching reused all of it but the last id
    assert details == {"cached_tokens": plain["usage"]["prompt_tokens"] - 1}


def test_n_and_logprobs(client: TestClient) -> None:
    body = {"model": MODEL, "messages": USER, "max_tokens": 3, "temperature": 0, "n": 2}
    response = client.post(
        "/v1/chat/completions",
        json={**body, "ignore_eos": True, "logprobs": True, "top_logprobs": 2},
    ).json()
    first, second = response["choices"]
    assert first["message"]["content"] == second["message"]["content"]  # greedy twice
    assert len(first["logprobs"]["content"]) == 3
    assert all(len(e["top_logprobs"]) == 2 for e in first["logprobs"]["content"])
    assert response["usage"]["completion_tokens"] == 6


def test_legacy_chat_and_stream(client: TestClient) -> None:
    body = {"prompt": "Hi", "history": [["a", "b"]], "max_length": 30, "temperature": 0}
    plain = client.post("/chat", json=body).json()
    assert plain["total_tokens"] <= 30
    events = [json.loads(d) for d in sse_data(client.post("/chat-stream", json=body).text)]
    assert events[-1]["content"] == plain["content"]
    assert events[-1]["finish_reason"] == plain["finish_reason"]


def test_prompt_too_long_and_tokenize(client: TestClient) -> None:
    response = client.post("/v1/completions", json={"model": MODEL, "prompt": "x" * 200})
    assert_error(response, 400, code="context_length_exceeded", param="prompt")
    ids = client.post("/tokenize", json={"prompt": "Hi"}).json()["tokenIds"]
    assert ids[-2:] == [ord("H"), ord("i")]  # the demo tokenizer is byte-level
