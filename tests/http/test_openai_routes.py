"""The OpenAI routes through the real app: shapes, streaming, errors."""

from __future__ import annotations

import base64
import struct
from pathlib import Path

from fastapi.testclient import TestClient

from glm_api.config import ServerSettings
from glm_api.engine.errors import ServerBusyError
from glm_api.formats import load_format
from glm_api.http.app import build_app
from glm_api.protocol.openai import ChatCompletionResponse, ChatCompletionStreamResponse
from glm_api.protocol.openai_misc import CompletionResponse, EmbeddingResponse, ModelList
from tests.fakes import FakeEmbeddingClient, FakeEngine
from tests.http.helpers import MODEL, assert_error, sse_data, sse_json

USER = [{"role": "user", "content": "Hi"}]


def test_chat_completion(client: TestClient, engine: FakeEngine) -> None:
    response = client.post("/v1/chat/completions", json={"model": MODEL, "messages": USER})
    assert response.status_code == 200
    body = ChatCompletionResponse.model_validate(response.json())
    assert body.id.startswith("chatcmpl-") and body.object == "chat.completion"
    assert body.choices[0].message.content == "Hello world!"
    assert body.choices[0].finish_reason == "stop"
    assert body.usage.total_tokens == 6 + 12
    assert engine.calls[0].request_id == f"{body.id}-0"


def test_chat_stream(client: TestClient) -> None:
    body = {
        "model": MODEL,
        "messages": USER,
        "stream": True,
        "stream_options": {"include_usage": True},
    }
    response = client.post("/v1/chat/completions", json=body)
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/event-stream")
    chunks = sse_json(response.text)
    for chunk in chunks:
        ChatCompletionStreamResponse.model_validate(chunk)
    assert len({c["id"] for c in chunks}) == 1
    assert chunks[0]["choices"][0]["delta"]["role"] == "assistant"
    text = "".join(c["choices"][0]["delta"].get("content", "") for c in chunks if c["choices"])
    assert text == "Hello world!"
    assert chunks[-2]["choices"][0]["finish_reason"] == "stop"
    assert chunks[-1]["usage"] == {
        "prompt_tokens": 6, "completion_tokens": 12, "total_tokens": 18,
        "prompt_tokens_details": {"cached_tokens": 0},
    }  # fmt: skip


def test_completions_text_and_stream(client: TestClient) -> None:
    response = client.post(
        "/v1/completions", json={"model": MODEL, "prompt": ["a", "b"], "max_tokens": 5}
    )
    body = CompletionResponse.model_validate(response.json())
    assert [c.text for c in body.choices] == ["Hello", "Hello"]
    assert [c.finish_reason for c in body.choices] == ["length", "length"]
    response = client.post("/v1/completions", json={"model": MODEL, "prompt": "a", "stream": True})
    chunks = sse_json(response.text)
    assert "".join(c["choices"][0]["text"] for c in chunks) == "Hello world!"
    assert chunks[-1]["object"] == "text_completion"


def test_models(client: TestClient) -> None:
    body = ModelList.model_validate(client.get("/v1/models").json())
    assert [(m.id, m.type) for m in body.data] == [
        (MODEL, "chat"),
        ("fake-minilm", "embedding"),
        ("fake-zh", "embedding"),
    ]
    assert client.get(f"/v1/models/{MODEL}").json()["id"] == MODEL
    assert_error(client.get("/v1/models/nope"), 404, code="model_not_found")


def test_embeddings_float_and_base64(client: TestClient) -> None:
    response = client.post("/v1/embeddings", json={"model": "fake-minilm", "input": ["ab", "c"]})
    body = EmbeddingResponse.model_validate(response.json())
    assert [d.embedding for d in body.data] == [[2.0, 0.0, 0.5, -0.25], [1.0, 1.0, 0.5, -0.25]]
    assert body.usage.total_tokens == 3
    body64 = client.post(
        "/v1/embeddings", json={"model": "fake-minilm", "input": "ab", "encoding_format": "base64"}
    ).json()
    raw = base64.b64decode(body64["data"][0]["embedding"])
    assert struct.unpack("<4f", raw) == (2.0, 0.0, 0.5, -0.25)


def test_embeddings_errors(client: TestClient) -> None:
    assert_error(
        client.post("/v1/embeddings", json={"model": "x", "input": "a"}), 404, "model_not_found"
    )
    assert_error(
        client.post("/v1/embeddings", json={"model": "fake-minilm", "input": []}),
        400,
        param="input",
    )
    response = client.post(
        "/v1/embeddings", json={"model": "fake-minilm", "input": "a", "dimensions": 2}
    )
    assert_error(response, 400, param="dimensions")


def test_unknown_model_404(client: TestClient) -> None:
    response = client.post("/v1/chat/completions", json={"model": "gpt-4o", "messages": USER})
    assert_error(response, 404, code="model_not_found", param="model")
    response = client.post("/v1/completions", json={"model": "gpt-4o", "prompt": "x"})
    assert_error(response, 404, code="model_not_found")


def test_validation_errors_are_400_in_openai_shape(client: TestClient) -> None:
    bad = [
        ({"model": MODEL, "messages": []}, "messages"),
        ({"model": MODEL, "messages": USER, "temperature": 2.5}, "temperature"),
        ({"model": MODEL, "messages": USER, "temperature": -0.1}, "temperature"),
        ({"model": MODEL, "messages": USER, "top_p": 0}, "top_p"),
        ({"model": MODEL, "messages": USER, "top_p": 1.5}, "top_p"),
        ({"model": MODEL, "messages": USER, "n": 0}, "n"),
        ({"model": MODEL, "messages": USER, "max_tokens": 0}, "max_tokens"),
        ({"model": MODEL, "messages": USER, "temperature": "hot"}, "temperature"),
        ({"model": MODEL, "messages": [{"role": "wizard", "content": "x"}]}, "messages.0.role"),
        ({"messages": USER}, "model"),
        ({"model": MODEL, "messages": USER, "seed": 2**63}, "seed"),
    ]
    for body, param in bad:
        assert_error(client.post("/v1/chat/completions", json=body), 400, param=param)
    error = assert_error(
        client.post(
            "/v1/chat/completions", json={"model": MODEL, "messages": USER, "top_logprobs": 2}
        ),
        400,
    )
    assert "top_logprobs requires logprobs" in error["message"]
    assert_error(
        client.post("/v1/completions", json={"model": MODEL, "prompt": "x", "suffix": "y"}), 400
    )


def test_malformed_json_is_400(client: TestClient) -> None:
    response = client.post(
        "/v1/chat/completions", content=b"{not json", headers={"Content-Type": "application/json"}
    )
    error = assert_error(response, 400)
    assert error["type"] == "invalid_request_error"


def test_prompt_too_long_is_400(client: TestClient) -> None:
    messages = [{"role": "user", "content": "x" * 100}]
    response = client.post("/v1/chat/completions", json={"model": MODEL, "messages": messages})
    assert_error(response, 400, code="context_length_exceeded")
    response = client.post(
        "/v1/chat/completions", json={"model": MODEL, "messages": messages, "stream": True}
    )
    assert_error(response, 400, code="context_length_exceeded")


def test_engine_errors_map_to_their_status(client: TestClient, engine: FakeEngine) -> None:
    engine.error = ServerBusyError("queue full")
    response = client.post(
        "/v1/chat/completions", json={"model": MODEL, "messages": USER, "stream": True}
    )
    error = assert_error(response, 503, code="server_busy")
    assert error["type"] == "server_busy"


def test_error_after_stream_start_is_one_final_event(
    client: TestClient, engine: FakeEngine
) -> None:
    engine.fail_after = 3
    response = client.post(
        "/v1/chat/completions", json={"model": MODEL, "messages": USER, "stream": True}
    )
    assert response.status_code == 200
    data = sse_data(response.text)
    assert data[-1].startswith('{"error":')
    assert '"message":"scripted failure mid-stream"' in data[-1]
    assert "[DONE]" not in data


def test_unexpected_exception_is_500_in_shape(client: TestClient, engine: FakeEngine) -> None:
    def explode(call: object) -> str:
        raise RuntimeError("boom")

    engine.reply = explode
    response = client.post("/v1/chat/completions", json={"model": MODEL, "messages": USER})
    error = assert_error(response, 500)
    assert error["type"] == "internal_error" and "boom" not in error["message"]


def test_unknown_route_is_404_in_shape(client: TestClient) -> None:
    assert_error(client.get("/v1/nothing-here"), 404)


def test_what_a_generation_cannot_express_is_400(assets: Path) -> None:
    # ChatGLM2 has no roles for tools; a reply may not be last; a call's arguments are JSON
    chatglm2 = FakeEngine(format=load_format(assets / "tokenizers" / "chatglm2-6b"))
    chatglm3 = FakeEngine(format=load_format(assets / "tokenizers" / "chatglm3-6b"))
    tool = {"type": "function", "function": {"name": "f", "parameters": {"type": "object"}}}
    call = {"id": "c1", "type": "function", "function": {"name": "f", "arguments": "[1]"}}
    cases = [
        (chatglm2, {"messages": USER, "tools": [tool]}),
        (chatglm2, {"messages": [*USER, {"role": "assistant", "content": "Hi"}]}),
        (chatglm3, {"messages": [*USER, {"role": "assistant", "tool_calls": [call]}]}),
    ]
    for engine, body in cases:
        app = build_app(ServerSettings(), engine, FakeEmbeddingClient(), MODEL)
        with TestClient(app) as client:
            response = client.post("/v1/chat/completions", json={"model": MODEL, **body})
            assert_error(response, 400, param="messages")
            if "tools" not in body:  # /tokenize renders the same messages
                assert_error(client.post("/tokenize", json={"messages": body["messages"]}), 400)
            assert not engine.calls
