"""The one error a model load raises; its message is a single line meant for the user."""

from __future__ import annotations


class ModelLoadError(Exception):
    """A checkpoint cannot be found, parsed or loaded (missing/unexpected/mis-shaped weights)."""
