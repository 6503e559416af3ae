"""Typed errors the engine raises; http/app.py maps each to an OpenAI error and status."""

from __future__ import annotations


class EngineError(Exception):
    """Base of every error the engine reports to a caller."""

    status_code = 500
    error_type = "internal_error"
    code: str | None = None
    param: str | None = None


class InvalidRequestError(EngineError):
    """The request cannot be run as asked (bad ids, bad parameters)."""

    status_code = 400
    error_type = "invalid_request_error"

    def __init__(self, message: str, param: str | None = None, code: str | None = None):
        super().__init__(message)
        self.param = param
        self.code = code


class PromptTooLongError(InvalidRequestError):
    """The prompt does not fit the context window (OpenAI's `context_length_exceeded`)."""

    def __init__(self, num_prompt_tokens: int, max_model_len: int):
        super().__init__(
            f"This model's maximum context length is {max_model_len} tokens, "
            f"but the prompt has {num_prompt_tokens} tokens.",
            param="messages",
            code="context_length_exceeded",
        )


class ServerBusyError(EngineError):
    """The waiting queue is full; the client should retry later."""

    status_code = 503
    error_type = "server_busy"
    code = "server_busy"


class EngineDeadError(EngineError):
    """The engine loop stopped after an internal failure."""

    status_code = 500
    error_type = "internal_error"
