"""Shared test fixtures: where the real GLM assets are, and how to skip without them."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

ASSETS = Path(__file__).resolve().parents[1].parent / "shared" / "assets"


def _require_assets() -> Path:
    if ASSETS.is_dir():
        return ASSETS
    if os.environ.get("CI") == "true":
        pytest.fail(f"CI=true but the shared assets are missing at {ASSETS}")
    pytest.skip(f"needs the real GLM tokenizers and reference numerics at {ASSETS}")


@pytest.fixture(scope="session")
def assets() -> Path:
    """`../shared/assets`: real tokenizers and reference numerics (skip when absent, fail in CI)."""
    return _require_assets()
