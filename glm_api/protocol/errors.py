"""The OpenAI error shape every failing route answers with: `{"error": {...}}`.

Only the pydantic models live here; which exception maps to which status is http/app.py's job.
"""

from __future__ import annotations

from pydantic import BaseModel


class ErrorInfo(BaseModel):
    message: str
    type: str
    param: str | None = None
    code: str | None = None


class ErrorResponse(BaseModel):
    error: ErrorInfo

    @classmethod
    def of(
        cls, message: str, type: str, param: str | None = None, code: str | None = None
    ) -> ErrorResponse:
        def text(value: str) -> str:  # a lone surrogate echoed from a request: escaped
            return value.encode("utf-8", "backslashreplace").decode("utf-8")

        return cls(
            error=ErrorInfo(
                message=text(message),
                type=type,
                param=text(param) if param is not None else None,
                code=code,
            )
        )
