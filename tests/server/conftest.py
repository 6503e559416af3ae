"""Start the real server (demo model, real engine, real embeddings) with uvicorn on 127.0.0.1."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Callable, Iterator

import httpx
import pytest
import uvicorn

from glm_api.config import ServerSettings
from glm_api.server import create_app


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_healthy(url: str, is_running: Callable[[], bool], what: str = "server") -> None:
    """Poll `url`/health until 200, failing if the server stops or 120 s pass."""
    deadline = time.monotonic() + 120
    while True:
        assert is_running(), f"{what} stopped before it was ready"
        assert time.monotonic() < deadline, f"{what} did not become ready"
        try:
            if httpx.get(url + "/health", timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.1)


def run_server(settings: ServerSettings) -> Iterator[str]:
    """Serve `settings` in a thread until the caller is done; yields the base URL."""
    port = free_port()
    app = create_app(settings)
    config = uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning")
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    url = f"http://127.0.0.1:{port}"
    wait_healthy(url, thread.is_alive)
    try:
        yield url
    finally:
        server.should_exit = True
        thread.join(timeout=30)


@pytest.fixture(scope="package")
def server_url() -> Iterator[str]:
    yield from run_server(ServerSettings(max_num_seqs=8, max_model_len=512))
