"""Every failure as the OpenAI error shape: typed engine errors, bad requests, the unexpected.

`error_for(exc)` is the one table from exception to (status, body); app.py installs it as
handlers and sse.py uses it for an error that happens after a stream has started.
"""

from __future__ import annotations

import logging
import re

from fastapi.exceptions import RequestValidationError
from starlette.exceptions import HTTPException

from glm_api.engine.errors import EngineError
from glm_api.protocol.base import LONE_SURROGATE
from glm_api.protocol.errors import ErrorResponse

logger = logging.getLogger("glm_api.http")


#: pydantic's names for the member of a union or the validator a value was tried against
#: (`messages.0.content.str`, `tool_choice.literal['none','auto']`): not the client's names
_UNION_TAG = re.compile(r"^(str|int|float|bool|list\[.*\]|dict\[.*\]|literal\[.*\]|[a-z-]+\[.*\])$")
_NOT_AN_OBJECT = ("model_attributes_type", "dict_type", "missing")


def _validation_error(exc: RequestValidationError) -> ErrorResponse:
    first = exc.errors()[0] if exc.errors() else {}
    loc = [str(part) for part in first.get("loc", ()) if part != "body"]
    param = ".".join(part for part in loc if not _UNION_TAG.match(part)) or None
    message = str(first.get("msg", "invalid request")).removeprefix("Value error, ")
    kind = first.get("type")
    if kind == LONE_SURROGATE:  # the message names the field already
        param = (first.get("ctx") or {}).get("param")
        return ErrorResponse.of(message, "invalid_request_error", param=param, code=kind)
    if kind == "json_invalid":
        message, param = "The request body is not valid JSON.", None
    elif param is None and kind in _NOT_AN_OBJECT:
        message = "The request body must be a JSON object (send Content-Type: application/json)."
    elif param:
        message = f"{param}: {message}"
    return ErrorResponse.of(message, "invalid_request_error", param=param, code=kind)


class BodyTooLargeError(Exception):
    """A request body over the server's limit (app.py's LimitBody)."""

    def __init__(self, limit: int) -> None:
        super().__init__(f"The request body is larger than {limit // 2**20} MiB.")


def error_for(exc: Exception) -> tuple[int, ErrorResponse]:
    """The status and OpenAI-shaped body for any exception a route can raise."""
    if isinstance(exc.__cause__, BodyTooLargeError):  # FastAPI wraps errors reading a body
        exc = exc.__cause__
    if isinstance(exc, BodyTooLargeError):
        return 413, ErrorResponse.of(str(exc), "invalid_request_error", code="request_too_large")
    if isinstance(exc, EngineError):
        body = ErrorResponse.of(str(exc), exc.error_type, exc.param, exc.code)
        return exc.status_code, body
    if isinstance(exc, RequestValidationError):
        return 400, _validation_error(exc)
    if isinstance(exc, HTTPException):
        kind = "not_found_error" if exc.status_code == 404 else "invalid_request_error"
        return exc.status_code, ErrorResponse.of(str(exc.detail), kind)
    logger.exception("unexpected error while serving a request", exc_info=exc)
    return 500, ErrorResponse.of("The server had an internal error.", "internal_error")
