"""App-wide behaviour: auth, health, metrics, CORS, the web page, embeddings-only apps."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

from fastapi.testclient import TestClient

from glm_api.config import ServerSettings
from glm_api.engine.errors import ServerBusyError
from glm_api.engine.protocol import EngineStats
from glm_api.http.app import build_app
from tests.fakes import FakeEmbeddingClient, FakeEngine
from tests.http.helpers import MODEL, assert_error

USER = [{"role": "user", "content": "Hi"}]


def test_api_keys_from_list_and_file(tmp_path: Path) -> None:
    key_file = tmp_path / "keys.txt"
    key_file.write_text("file-key\n\n  other-key  \n")
    settings = ServerSettings(api_key=["inline-key", f"@{key_file}"])
    client = TestClient(build_app(settings, FakeEngine(), FakeEmbeddingClient(), MODEL))
    error = assert_error(client.get("/v1/models"), 401, code="invalid_api_key")
    assert error["type"] == "invalid_request_error"
    assert_error(client.get("/v1/models", headers={"Authorization": "Bearer wrong"}), 401)
    assert_error(client.post("/chat", json={"prompt": "x"}), 401)
    assert_error(client.get("/metrics"), 401)
    for key in ("inline-key", "file-key", "other-key"):
        assert (
            client.get("/v1/models", headers={"Authorization": f"Bearer {key}"}).status_code == 200
        )
    assert client.get("/health").status_code == 200
    assert client.get("/").status_code == 200  # the page itself; it sends the key it is given
    assert client.get("/openapi.json").status_code == 404


def test_health_follows_ready() -> None:
    state = {"ready": False}
    app = build_app(ServerSettings(), FakeEngine(), None, MODEL, ready=lambda: state["ready"])
    client = TestClient(app)
    assert_error(client.get("/health"), 503)
    assert client.head("/health").status_code == 503
    state["ready"] = True
    assert client.get("/health").json() == {"status": "ok"}
    head = client.head("/health")  # uptime probes: the status, no body
    assert head.status_code == 200 and head.content == b""
    assert client.head("/").status_code == 200


def test_metrics_text(engine: FakeEngine, client: TestClient) -> None:
    engine.engine_stats = EngineStats(
        num_running=3,
        num_waiting=2,
        kv_cache_usage=0.25,
        num_prompt_tokens_total=100,
        num_generation_tokens_total=40,
        num_steps_total=7,
        batch_sizes=[1, 3, 3],
        time_to_first_token=[0.02, 0.3],
    )
    text = client.get("/metrics").text
    lines = set(text.splitlines())
    for line in [
        "glm_api_requests_running 3.0",
        "glm_api_requests_waiting 2.0",
        "glm_api_kv_cache_usage_ratio 0.25",
        "glm_api_prompt_tokens_total 100.0",
        "glm_api_generation_tokens_total 40.0",
        'glm_api_batch_size_bucket{le="2.0"} 1.0',
        'glm_api_batch_size_bucket{le="4.0"} 3.0',
        "glm_api_batch_size_count 3.0",
        "glm_api_batch_size_sum 7.0",
        'glm_api_time_to_first_token_seconds_bucket{le="0.025"} 1.0',
        "glm_api_time_to_first_token_seconds_count 2.0",
    ]:
        assert line in lines, line
    # the batch sizes drained: a second scrape does not count them twice
    assert "glm_api_batch_size_count 3.0" in client.get("/metrics").text.splitlines()


def test_cors_only_when_origins_are_set() -> None:
    headers = {"Origin": "http://ui.example", "Access-Control-Request-Method": "POST"}
    plain = TestClient(build_app(ServerSettings(), FakeEngine(), None, MODEL))
    assert (
        "access-control-allow-origin"
        not in plain.options("/v1/chat/completions", headers=headers).headers
    )
    settings = ServerSettings(allowed_origins=["http://ui.example"])
    cors = TestClient(build_app(settings, FakeEngine(), None, MODEL))
    response = cors.options("/v1/chat/completions", headers=headers)
    assert response.headers["access-control-allow-origin"] == "http://ui.example"


def test_web_page(client: TestClient) -> None:
    response = client.get("/")
    assert response.headers["content-type"].startswith("text/html")
    page = response.text
    assert f'value="{MODEL}"' in page
    assert "/v1/chat/completions" in page and "Authorization" in page
    assert "<script src" not in page  # self-contained


def test_embeddings_only_app() -> None:
    client = TestClient(build_app(ServerSettings(), None, FakeEmbeddingClient(), "unused"))
    assert client.get("/health").status_code == 200
    assert [m["id"] for m in client.get("/v1/models").json()["data"]] == ["fake-minilm", "fake-zh"]
    assert client.post("/v1/embeddings", json={"model": "fake-zh", "input": "a"}).status_code == 200
    response = client.post("/v1/chat/completions", json={"model": "unused", "messages": USER})
    assert_error(response, 404, code="model_not_found")
    assert_error(client.post("/chat", json={"prompt": "x"}), 404, code="model_not_found")


def test_two_apps_in_one_process_have_separate_metrics() -> None:
    a = TestClient(build_app(ServerSettings(), FakeEngine(), None, MODEL))
    b = TestClient(build_app(ServerSettings(), FakeEngine(), None, MODEL))
    assert a.get("/metrics").status_code == b.get("/metrics").status_code == 200


class LoadingEngine(FakeEngine):
    """Like the server's stand-in while the checkpoint loads: asks raise a 503 error."""

    @property  # type: ignore[override]
    def max_model_len(self) -> int:
        raise ServerBusyError("the model is still loading")

    @max_model_len.setter
    def max_model_len(self, value: int) -> None:
        pass


def test_models_are_listed_while_the_engine_loads() -> None:
    client = TestClient(
        build_app(ServerSettings(), LoadingEngine(), None, MODEL, ready=lambda: False)
    )
    assert client.get("/v1/models").json()["data"][0]["max_model_len"] is None
    assert client.get("/models").json()["data"][0] == {
        "id": MODEL, "type": "chat", "max_length": None, "dimension": None,
        "languages": None, "pooling": None, "normalized": None,
    }  # fmt: skip
    assert_error(client.get("/health"), 503)


def test_a_body_over_the_limit_is_a_413_whether_its_length_is_given_or_not(
    client: TestClient,
) -> None:
    from glm_api.http.app import MAX_BODY_BYTES

    big = b'{"model": "m", "input": "' + b"a" * MAX_BODY_BYTES + b'"}'
    headers = {"content-type": "application/json"}
    error = assert_error(client.post("/v1/embeddings", content=big, headers=headers), 413)
    assert error["code"] == "request_too_large" and "32 MiB" in error["message"]

    def chunks() -> Iterator[bytes]:  # no Content-Length: counted as it arrives
        yield b'{"model": "m", "input": "'
        for _ in range(33):
            yield b"a" * 2**20
        yield b'"}'

    chunked = client.post("/v1/embeddings", content=chunks(), headers=headers)
    assert_error(chunked, 413, code="request_too_large")
    assert client.get("/health").status_code == 200
