"""The real app over the fakes (fixtures for the tests under tests/http)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from fastapi.testclient import TestClient

from glm_api.config import ServerSettings
from glm_api.http.app import build_app
from tests.fakes import FakeEmbeddingClient, FakeEngine
from tests.http.helpers import MODEL


@pytest.fixture
def engine() -> FakeEngine:
    return FakeEngine()


@pytest.fixture
def embeddings() -> FakeEmbeddingClient:
    return FakeEmbeddingClient()


@pytest.fixture
def client(engine: FakeEngine, embeddings: FakeEmbeddingClient) -> Iterator[TestClient]:
    app = build_app(ServerSettings(), engine, embeddings, MODEL)
    with TestClient(app) as test_client:
        yield test_client
