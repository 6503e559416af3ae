"""GLM API: an OpenAI-compatible server for the GLM model family, with its own engine.

The public Python API is small: configuration objects, the sampling parameters, and (loaded
on first use, since they import torch) the model loader, the engine and the app factory.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from glm_api.config import EngineConfig, ServerSettings
from glm_api.engine.request import SamplingParams

if TYPE_CHECKING:
    from glm_api.engine.async_engine import AsyncEngine
    from glm_api.models.loader import load_model
    from glm_api.server import create_app

__version__ = "0.1.0"

_LAZY = {
    "AsyncEngine": "glm_api.engine.async_engine",
    "create_app": "glm_api.server",
    "load_model": "glm_api.models.loader",
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'glm_api' has no attribute {name!r}")


__all__ = [
    "AsyncEngine",
    "EngineConfig",
    "SamplingParams",
    "ServerSettings",
    "__version__",
    "create_app",
    "load_model",
]
