"""`RequestModel` and `RequestBody`: the bases of every request's models (OpenAI and the
original routes).

Two rules hold for every field of every request, before the field's own validation:

- `null` means the default, as OpenAI's API treats it (`"stream": null` is `false`, `"n":
  null` is 1); a field that has no default stays required, and `null` there is an error.
- text must be Unicode: a JSON `"\\ud800"` escape decodes to a lone UTF-16 surrogate, which no
  tokenizer can encode; it is refused here with the field it came in, instead of failing
  deep in a tokenizer.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, model_validator
from pydantic_core import PydanticCustomError

#: the error type of a lone surrogate (http/errors.py takes its field from the context)
LONE_SURROGATE = "lone_surrogate"


def surrogate_path(value: Any, path: str = "") -> tuple[str, str] | None:
    """(where, the character escaped) of the first lone surrogate in a JSON value, or None."""
    if isinstance(value, str):
        try:
            value.encode("utf-8")
        except UnicodeEncodeError as error:
            return path, value[error.start].encode("unicode_escape").decode("ascii")
        return None
    items = (
        value.items()
        if isinstance(value, dict)
        else enumerate(value)
        if isinstance(value, list)
        else ()
    )
    for key, item in items:
        key_text = str(key)
        found = surrogate_path(key_text, path) if isinstance(key, str) else None
        found = found or surrogate_path(item, f"{path}.{key_text}" if path else key_text)
        if found:
            return found
    return None


class RequestModel(BaseModel):
    """A model a request body holds (nested ones too): `null` takes the field's default."""

    @model_validator(mode="before")
    @classmethod
    def _nulls(cls, data: Any) -> Any:
        if not isinstance(data, dict):
            return data
        nulls = []
        for name, field in cls.model_fields.items():
            key = field.alias or name
            has_default = field.default is not None or field.default_factory is not None
            if data.get(key, 0) is None and not field.is_required() and has_default:
                nulls.append(key)
        return {k: v for k, v in data.items() if k not in nulls} if nulls else data


class RequestBody(RequestModel):
    """A whole request body: its text is checked for lone surrogates once, here, before the
    models nested in it are validated (they would only scan the same text again)."""

    @model_validator(mode="before")
    @classmethod
    def _unicode(cls, data: Any) -> Any:
        found = surrogate_path(data) if isinstance(data, dict) else None
        if found is not None:
            where, char = found
            # a model-level error has no field location: the field goes in its context
            raise PydanticCustomError(
                LONE_SURROGATE,
                "{where}: the text holds a lone UTF-16 surrogate ({char}), which is not valid "
                "Unicode",
                {"where": where or "the body", "char": char, "param": where or None},
            )
        return data
