"""The official `openai` client against a real uvicorn server (fake engine) on 127.0.0.1."""

from __future__ import annotations

import asyncio
import socket
import threading
import time
from collections.abc import Iterator

import httpx
import openai
import pytest
import uvicorn

from glm_api.config import ServerSettings
from glm_api.http.app import build_app
from tests.fakes import FakeEmbeddingClient, FakeEngine

MODEL = "glm-test"
KEY = "sk-test"


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture(scope="module")
def engine() -> FakeEngine:
    return FakeEngine()


@pytest.fixture(scope="module")
def server_url(engine: FakeEngine) -> Iterator[str]:
    app = build_app(ServerSettings(api_key=[KEY]), engine, FakeEmbeddingClient(), MODEL)
    port = _free_port()
    config = uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", lifespan="on")
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started:  # waiting for startup, not a timing assertion
        assert thread.is_alive() and time.monotonic() < deadline, "uvicorn did not start"
        time.sleep(0.02)
    yield f"http://127.0.0.1:{port}/v1"
    server.should_exit = True
    thread.join(timeout=10)


@pytest.fixture
def client(server_url: str) -> openai.OpenAI:
    return openai.OpenAI(base_url=server_url, api_key=KEY, max_retries=0)


def test_chat(client: openai.OpenAI) -> None:
    completion = client.chat.completions.create(
        model=MODEL, messages=[{"role": "user", "content": "Hi"}], max_tokens=5, seed=1
    )
    assert completion.choices[0].message.content == "Hello"
    assert completion.choices[0].finish_reason == "length"
    assert completion.usage is not None and completion.usage.completion_tokens == 5


def test_chat_stream_with_usage(client: openai.OpenAI) -> None:
    stream = client.chat.completions.create(
        model=MODEL,
        messages=[{"role": "user", "content": "Hi"}],
        stream=True,
        stream_options={"include_usage": True},
    )
    chunks = list(stream)
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == "Hello world!"
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == "stop"
    assert chunks[-1].choices == []
    assert chunks[-1].usage is not None and chunks[-1].usage.total_tokens == 18


def test_completions(client: openai.OpenAI) -> None:
    completion = client.completions.create(model=MODEL, prompt="Hi", max_tokens=3)
    assert completion.choices[0].text == "Hel"
    streamed = client.completions.create(model=MODEL, prompt="Hi", max_tokens=3, stream=True)
    assert "".join(c.choices[0].text for c in streamed) == "Hel"


def test_models(client: openai.OpenAI) -> None:
    assert [m.id for m in client.models.list()] == [MODEL, "fake-minilm", "fake-zh"]
    assert client.models.retrieve(MODEL).id == MODEL


def test_embeddings_float_and_base64(client: openai.OpenAI) -> None:
    as_float = client.embeddings.create(model="fake-minilm", input=["ab"], encoding_format="float")
    assert as_float.data[0].embedding == [2.0, 0.0, 0.5, -0.25]
    as_base64 = client.embeddings.create(
        model="fake-minilm", input=["ab", "c"]
    )  # base64 on the wire
    assert [d.embedding for d in as_base64.data] == [[2.0, 0.0, 0.5, -0.25], [1.0, 1.0, 0.5, -0.25]]
    assert as_base64.usage.prompt_tokens == 3


def test_errors_raise_the_clients_typed_exceptions(client: openai.OpenAI, server_url: str) -> None:
    with pytest.raises(openai.NotFoundError) as not_found:
        client.chat.completions.create(model="gpt-4o", messages=[{"role": "user", "content": "x"}])
    assert not_found.value.code == "model_not_found"
    with pytest.raises(openai.BadRequestError):
        client.chat.completions.create(
            model=MODEL, messages=[{"role": "user", "content": "x"}], temperature=3
        )
    with pytest.raises(openai.AuthenticationError):
        openai.OpenAI(base_url=server_url, api_key="wrong", max_retries=0).models.list()


def _wait_until_closed(engine: FakeEngine, count: int) -> None:
    deadline = time.monotonic() + 20
    while len(engine.closed) < count:  # the server notices the disconnect on its own thread
        assert time.monotonic() < deadline, "the engine request was never closed"
        time.sleep(0.02)


def test_client_disconnect_aborts_a_stream(engine: FakeEngine, server_url: str) -> None:
    engine.hold = asyncio.Event()  # the fake stops after its first token until released
    before = len(engine.closed)
    body = {"model": MODEL, "messages": [{"role": "user", "content": "Hi"}], "stream": True}
    headers = {"Authorization": f"Bearer {KEY}"}
    try:
        with httpx.stream(
            "POST", f"{server_url}/chat/completions", json=body, headers=headers
        ) as r:
            assert r.status_code == 200
            next(r.iter_lines())  # the role chunk arrived; now hang up
        _wait_until_closed(engine, before + 1)
        assert engine.calls[-1].request_id not in engine.finished
        with pytest.raises(httpx.ReadTimeout):  # a non-streamed request, abandoned mid-way
            httpx.post(
                f"{server_url}/chat/completions",
                json={**body, "stream": False},
                headers=headers,
                timeout=0.5,
            )
        _wait_until_closed(engine, before + 2)
        assert engine.calls[-1].request_id not in engine.finished
    finally:
        engine.hold = None
