"""Helpers for the tests under tests/http: the served name, an SSE parser, error checks."""

from __future__ import annotations

import json
from typing import Any

MODEL = "glm-test"


def sse_data(body: str) -> list[str]:
    """The `data:` payloads of an SSE body, checking every event is one data line."""
    assert body.endswith("\n\n")
    events = body[:-2].split("\n\n")
    assert all(e.startswith("data: ") and "\n" not in e for e in events), events
    return [e[len("data: ") :] for e in events]


def sse_json(body: str) -> list[dict[str, Any]]:
    data = sse_data(body)
    assert data[-1] == "[DONE]"
    return [json.loads(d) for d in data[:-1]]


def assert_error(
    response: Any, status: int, code: str | None = None, param: str | None = None
) -> dict[str, Any]:
    """An OpenAI-shaped error with exactly these four keys."""
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert set(error) == {"message", "type", "param", "code"}
    assert isinstance(error["message"], str) and error["message"]
    if code is not None:
        assert error["code"] == code
    if param is not None:
        assert error["param"] == param
    return error  # type: ignore[no-any-return]
