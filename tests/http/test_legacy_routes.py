"""The original GLM API routes and ChatGLM-6B's POST / through the real app."""

from __future__ import annotations

import json
import re

from fastapi.testclient import TestClient

from tests.fakes import FakeEngine, ids_of
from tests.http.helpers import MODEL, assert_error, sse_data


def test_chat(client: TestClient, engine: FakeEngine) -> None:
    response = client.post("/chat", json={"prompt": "Hi", "history": [], "max_length": 20})
    assert response.json() == {
        "content": "Hello world!",
        "prompt_tokens": 6,
        "completion_tokens": 12,
        "total_tokens": 18,
        "model": MODEL,
        "object": "chat.completion",
        "finish_reason": "stop",
    }
    assert engine.calls[0].params.max_tokens == 14


def test_chat_flat_history_of_the_typescript_client(client: TestClient, engine: FakeEngine) -> None:
    client.post("/chat", json={"prompt": "Hi", "history": [["q", "a", "r", "b"]]})
    assert engine.calls[0].prompt_ids == [
        1, 2, 5, *ids_of("q"), 6, *ids_of("a"), 5, *ids_of("r"), 6, *ids_of("b"), 5, *ids_of("Hi"), 6,
    ]  # fmt: skip


def test_chat_errors(client: TestClient) -> None:
    assert_error(
        client.post("/chat", json={"prompt": "Hi", "max_length": 6}),
        400,
        "context_length_exceeded",
        "max_length",
    )
    assert_error(
        client.post("/chat", json={"prompt": "Hi", "history": [["q"]]}), 400, param="history"
    )
    assert_error(client.post("/chat", json={"history": []}), 400, param="prompt")
    assert_error(client.post("/chat", json={"prompt": "Hi", "top_p": 0}), 400, param="top_p")


def test_chat_stream_events_then_close_without_done(client: TestClient) -> None:
    response = client.post("/chat-stream", json={"prompt": "Hi", "max_length": 9})
    assert response.headers["content-type"].startswith("text/event-stream")
    events = [json.loads(d) for d in sse_data(response.text)]  # every event parses as JSON
    assert [e["content"] for e in events] == ["H", "He", "Hel"]
    assert "finish_reason" not in events[0]
    assert events[-1]["finish_reason"] == "length"
    assert events[-1]["total_tokens"] == 9 and events[-1]["model"] == MODEL


def test_tokenize(client: TestClient) -> None:
    body = client.post("/tokenize", json={"prompt": "abc", "max_length": 4}).json()
    assert body == {
        "tokenIds": [1, 2, *ids_of("ab")],
        "tokens": ["a", "b", "c"],
        "model": MODEL,
        "object": "tokenizer",
    }
    body = client.post("/tokenize", json={"messages": [{"role": "user", "content": "a"}]}).json()
    assert body["tokenIds"] == [1, 2, 5, *ids_of("a"), 6]
    assert_error(client.post("/tokenize", json={}), 400, param="prompt")


def test_embedding(client: TestClient) -> None:
    body = client.post("/embedding", json={"prompt": ["ab"]}).json()
    assert body == {"data": [[2.0, 0.0, 0.5, -0.25]], "model": "fake-minilm", "object": "embedding"}
    body = client.post("/embedding", json={"prompt": ["ab"], "model": "fake-zh"}).json()
    assert body["model"] == "fake-zh" and len(body["data"][0]) == 3
    assert_error(
        client.post("/embedding", json={"prompt": ["ab"], "model": "x"}), 404, "model_not_found"
    )


def test_models(client: TestClient) -> None:
    body = client.get("/models").json()
    assert body["object"] == "list"
    chat, minilm, zh = body["data"]
    assert chat == {"id": MODEL, "type": "chat", "max_length": 64, "dimension": None, "languages": None,
                    "pooling": None, "normalized": None}  # fmt: skip
    assert (minilm["id"], minilm["dimension"], minilm["languages"]) == ("fake-minilm", 4, "en")
    assert (zh["dimension"], zh["languages"], zh["pooling"]) == (3, "zh", "cls")


def test_chatglm_6b_api_root(client: TestClient, engine: FakeEngine) -> None:
    body = client.post("/", json={"prompt": "Hi", "history": [["q", "a"]], "max_length": 60}).json()
    assert body["response"] == "Hello world!"
    assert body["history"] == [["q", "a"], ["Hi", "Hello world!"]]
    assert body["status"] == 200
    assert re.fullmatch(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d", body["time"])
    assert engine.calls[0].params.max_tokens == 60 - len(engine.calls[0].prompt_ids)


def test_chatglm_6b_api_takes_null_as_the_default(client: TestClient, engine: FakeEngine) -> None:
    nulls = {"history": None, "max_length": None, "top_p": None, "temperature": None}
    body = client.post("/", json={"prompt": "Hi", **nulls}).json()  # api.py: `x or default`
    assert body["history"] == [["Hi", "Hello world!"]]
    params = engine.calls[0].params
    assert (params.top_p, params.temperature) == (0.7, 0.95)
