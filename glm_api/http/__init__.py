"""The HTTP layer, the only package that imports FastAPI/Starlette: `build_app`."""

from __future__ import annotations

from glm_api.http.app import build_app

__all__ = ["build_app"]
