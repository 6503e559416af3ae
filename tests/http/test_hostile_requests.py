"""Requests a review sent to break the server, over the real engine and the demo model.

Each was a 500, a silent wrong answer or a denial of service for other clients before; each
must now be a clear 4xx in the OpenAI shape (or the right answer), and the server must go on
serving.
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
from tests.fakes import FakeEmbeddingClient
from tests.http.helpers import assert_error, sse_data

MODEL = "glm-demo"
USER = [{"role": "user", "content": "Hi"}]
SURROGATE = '"\\ud800"'  # a JSON escape that decodes to a lone UTF-16 surrogate


@pytest.fixture(scope="module")
def client() -> Iterator[TestClient]:
    loaded = build_demo_model()
    config = EngineConfig(max_model_len=128, max_num_seqs=4, max_num_batched_tokens=64)
    engine = AsyncEngine(loaded.model, loaded.format, config, loaded.generation_defaults)
    app = build_app(ServerSettings(), engine, FakeEmbeddingClient(), MODEL)
    try:
        with TestClient(app) as test_client:
            yield test_client
    finally:
        engine.shutdown()


def _raw(client: TestClient, path: str, body: str) -> object:
    return client.post(path, content=body, headers={"content-type": "application/json"})


@pytest.mark.parametrize(
    ("path", "body", "where"),
    [
        ("/v1/completions", f'{{"model":"{MODEL}","prompt":{SURROGATE}}}', "prompt"),
        ("/v1/completions", f'{{"model":"{MODEL}","prompt":["a",{SURROGATE}]}}', "prompt.1"),
        ("/v1/chat/completions", f'{{"model":{SURROGATE},"messages":[]}}', "model"),
        ("/v1/embeddings", f'{{"model":"m","input":{SURROGATE}}}', "input"),
        ("/chat", f'{{"prompt":{SURROGATE}}}', "prompt"),
        ("/chat", f'{{"prompt":"a","history":[["b",{SURROGATE}]]}}', "history.0.1"),
        ("/tokenize", f'{{"prompt":{SURROGATE}}}', "prompt"),
        ("/embedding", f'{{"prompt":{SURROGATE}}}', "prompt"),
        ("/", f'{{"prompt":{SURROGATE}}}', "prompt"),
    ],
)
def test_a_lone_surrogate_is_a_400_naming_its_field(
    client: TestClient, path: str, body: str, where: str
) -> None:
    error = assert_error(_raw(client, path, body), 400)
    assert error["message"] == (
        f"{where}: the text holds a lone UTF-16 surrogate (\\ud800), which is not valid Unicode"
    )
    assert error["param"] == where and error["code"] == "lone_surrogate"
    assert client.post("/v1/chat/completions", json={"model": MODEL, "messages": USER,
                       "max_tokens": 2}).status_code == 200  # fmt: skip


def test_nulls_mean_the_defaults(client: TestClient) -> None:
    body = {"model": MODEL, "messages": USER, "max_tokens": 2, "stream": None, "n": None,
            "logprobs": None, "frequency_penalty": None, "presence_penalty": None}  # fmt: skip
    reply = client.post("/v1/chat/completions", json=body)
    assert reply.status_code == 200, reply.text
    assert len(reply.json()["choices"]) == 1
    completion = {"model": MODEL, "prompt": "a", "max_tokens": 2, "echo": None, "n": None,
                  "stream": None}  # fmt: skip
    assert client.post("/v1/completions", json=completion).status_code == 200
    assert_error(client.post("/v1/chat/completions", json={**body, "messages": None}), 400)


def test_a_request_for_more_completions_than_the_queue_holds_is_a_400(
    client: TestClient,
) -> None:
    body = {"model": MODEL, "prompt": ["a"] * 19, "n": 16, "max_tokens": 50}
    error = assert_error(client.post("/v1/completions", json=body), 400)
    assert error["message"] == (
        "this request asks for 304 completions (19 prompts x n=16); at most 128 per request"
    )
    assert client.get("/metrics").text.count("glm_api_requests_waiting 0.0") == 1


def test_a_tiny_temperature_is_greedy(client: TestClient) -> None:
    body = {"model": MODEL, "messages": USER, "max_tokens": 8, "ignore_eos": True}
    greedy = client.post("/v1/chat/completions", json={**body, "temperature": 0}).json()
    for temperature in (1e-39, 1e-300, 5e-6):
        reply = client.post("/v1/chat/completions", json={**body, "temperature": temperature})
        assert reply.json()["choices"][0]["message"] == greedy["choices"][0]["message"]
    bad = {**body, "repetition_penalty": 1e-300}
    error = assert_error(client.post("/v1/chat/completions", json=bad), 400)
    assert error["param"] == "repetition_penalty"


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        ({"response_format": {"type": "json_object"}}, "response_format 'json_object' is not"),
        ({"response_format": "x"}, "response_format: Input should be a valid dictionary"),
        ({"stream_options": {"include_usage": True}}, "stream_options is only allowed when"),
        ({"tool_choice": "required"}, "tool_choice 'required' needs tools"),
        (
            {"messages": [{"role": "tool", "content": "42"}]},
            "messages.0: a tool message needs the tool_c",
        ),
        (
            {"messages": [{"role": "user", "content": []}]},
            "messages.0: a user message's content must not",
        ),
        ({"messages": [{"role": "assistant"}]}, "messages.0: an assistant message needs content"),
    ],
)
def test_requests_the_server_would_have_half_answered_are_refused(
    client: TestClient, extra: dict, message: str
) -> None:
    body = {"model": MODEL, "messages": USER, "max_tokens": 2, **extra}
    error = assert_error(client.post("/v1/chat/completions", json=body), 400)
    assert error["message"].startswith(message), error["message"]
    plain = {"model": MODEL, "messages": USER, "max_tokens": 2, "response_format": {"type": "text"}}
    assert client.post("/v1/chat/completions", json=plain).status_code == 200


def test_a_body_that_is_not_a_json_object_says_so(client: TestClient) -> None:
    form = client.post("/v1/chat/completions", content="model=x", headers={
        "content-type": "application/x-www-form-urlencoded"})  # fmt: skip
    error = assert_error(form, 400, param=None)
    assert error["message"] == (
        "The request body must be a JSON object (send Content-Type: application/json)."
    )
    assert_error(client.post("/v1/chat/completions"), 400, param=None)


def test_params_name_the_clients_fields_not_pydantics_union_members(client: TestClient) -> None:
    body = {"model": MODEL, "messages": [{"role": "user", "content": 5}]}
    error = assert_error(client.post("/v1/chat/completions", json=body), 400)
    assert error["param"] == "messages.0.content"
    assert error["message"].startswith("messages.0.content: ")
    choice = assert_error(
        client.post("/v1/chat/completions", json={**body, "messages": USER, "tool_choice": "x"}),
        400,
    )
    assert choice["param"] == "tool_choice"


def test_a_reply_without_tool_calls_has_tool_calls_null(client: TestClient) -> None:
    body = {"model": MODEL, "messages": USER, "max_tokens": 2}
    message = client.post("/v1/chat/completions", json=body).json()["choices"][0]["message"]
    assert message["tool_calls"] is None


@pytest.mark.parametrize(
    "extra",
    [{}, {"stop": ["+XQ"]}, {"stop": ["+X"]}, {"skip_special_tokens": False}],
    ids=["plain", "held-back-stop", "cut-by-stop", "specials-shown"],
)
def test_completion_text_offsets_follow_the_text_streamed_or_not(
    client: TestClient, extra: dict
) -> None:
    """The demo model samples byte tokens and specials here: offsets count characters of the
    returned text (a dropped special or a partial byte adds none), the same when streamed."""
    body = {"model": MODEL, "prompt": "hi", "max_tokens": 12, "logprobs": 1, "seed": 6,
            "temperature": 1.5, **extra}  # fmt: skip
    choice = client.post("/v1/completions", json=body).json()["choices"][0]
    offsets, text = choice["logprobs"]["text_offset"], choice["text"]
    assert offsets == sorted(offsets) and all(0 <= o <= len(text) for o in offsets)
    if not extra:
        assert len(text) == 10 and offsets == [0, 1, 2, 2, 3, 4, 5, 6, 6, 7, 8, 9]
    streamed = client.post("/v1/completions", json={**body, "stream": True}).text
    chunks = [json.loads(d) for d in sse_data(streamed)[:-1]]
    parts = [c["choices"][0] for c in chunks if c["choices"]]
    assert "".join(p["text"] for p in parts) == text
    assert [o for p in parts if p["logprobs"] for o in p["logprobs"]["text_offset"]] == offsets
