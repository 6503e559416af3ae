"""Bearer-key auth: `settings.api_key` entries, "@FILE" entries read as one key per line.

Routers that need a key depend on `require_api_key`; /health and the static page do not.
"""

from __future__ import annotations

import hmac
from pathlib import Path

from fastapi import Request

from glm_api.engine.errors import EngineError


class AuthenticationError(EngineError):
    status_code = 401
    error_type = "invalid_request_error"
    code = "invalid_api_key"


def load_api_keys(entries: list[str]) -> frozenset[str]:
    keys: set[str] = set()
    for entry in entries:
        if entry.startswith("@"):
            lines = Path(entry[1:]).read_text(encoding="utf-8").splitlines()
            keys.update(line.strip() for line in lines if line.strip())
        elif entry:
            keys.add(entry)
    return frozenset(keys)


def _matches(given: str, keys: frozenset[str]) -> bool:
    # compare against every key so the time taken does not tell which one nearly matched
    found = False
    for key in keys:
        found |= hmac.compare_digest(given.encode(), key.encode())
    return found


async def require_api_key(request: Request) -> None:
    keys: frozenset[str] = request.app.state.api_keys
    if not keys:
        return
    scheme, _, given = request.headers.get("Authorization", "").partition(" ")
    if scheme.lower() != "bearer" or not _matches(given.strip(), keys):
        raise AuthenticationError(
            "Missing or incorrect API key: send `Authorization: Bearer YOUR_KEY`."
        )
