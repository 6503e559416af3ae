"""GLM chat formats: pick a generation from a checkpoint folder's files and load its format.

`detect_generation(folder)` reads config.json and looks at which tokenizer files exist; the
folder's name is never used. The rules, in order:

0. config.json must name a GLM model: `model_type` chatglm, glm, glm4 or glm4v, or an
   architecture with "glm" in its name.
1. `model_type` glm / glm4 / glm4v (transformers' own classes) with tokenizer.json: the
   `-hf` layout -> "glm4-hf".
2. ice_text.model exists, or config.json says `position_encoding_2d: true` -> "chatglm-6b".
3. tokenizer.model is tiktoken text (`base64 rank` lines) -> "glm4".
4. tokenizer.model is a sentencepiece protobuf -> ChatGLM2 or ChatGLM3. Their config.json
   files have the same fields, so the deciding evidence is, in order: role tokens
   (`<|user|>`) named in tokenizer_config.json (a chat template or added tokens); the model
   id the publisher wrote into config.json / tokenizer_config.json (`_name_or_path`,
   `name_or_path`) naming chatglm2 or chatglm3; else "chatglm3", whose prompt is a strict
   superset (same vocabulary plus role tokens). Pass `generation=` to override.
5. A chatglm config with only tokenizer.json -> "glm4-hf".

Anything else raises ValueError naming what was looked at.
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path
from typing import Any

from glm_api.formats.base import (
    ChatFormat,
    ChatMessage,
    IncrementalDecoder,
    ParsedReply,
    ToolCall,
)

GENERATIONS = ("chatglm-6b", "chatglm2", "chatglm3", "glm4", "glm4-hf", "demo")
_HF_MODEL_TYPES = {"glm", "glm4", "glm4v"}
_GLM_MODEL_TYPES = _HF_MODEL_TYPES | {"chatglm"}
_TIKTOKEN_LINE = re.compile(rb"^[A-Za-z0-9+/=]+ \d+\r?\n")


def _read_json(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError):
        return {}
    return data if isinstance(data, dict) else {}


def _is_tiktoken_file(path: Path) -> bool:
    with open(path, "rb") as handle:
        return bool(_TIKTOKEN_LINE.match(handle.readline(256)))


def _v2_or_v3(config: dict[str, Any], tokenizer_config: dict[str, Any]) -> str:
    if "<|user|>" in json.dumps(tokenizer_config):
        return "chatglm3"
    names = " ".join(
        str(d.get(key, ""))
        for d in (config, tokenizer_config)
        for key in ("_name_or_path", "name_or_path")
    ).lower()
    if "chatglm2" in names and "chatglm3" not in names:
        return "chatglm2"
    return "chatglm3"


def _is_glm(config: dict[str, Any]) -> bool:
    architectures = " ".join(str(a) for a in config.get("architectures") or []).lower()
    return config.get("model_type") in _GLM_MODEL_TYPES or "glm" in architectures


def _detect(path: Path, config: dict[str, Any], has: dict[str, bool]) -> str | None:
    if config.get("model_type") in _HF_MODEL_TYPES:
        return "glm4-hf" if has["tokenizer.json"] else None
    if has["ice_text.model"] or config.get("position_encoding_2d") is True:
        return "chatglm-6b" if has["ice_text.model"] else None
    if has["tokenizer.model"]:
        if _is_tiktoken_file(path / "tokenizer.model"):
            return "glm4"
        return _v2_or_v3(config, _read_json(path / "tokenizer_config.json"))
    return "glm4-hf" if has["tokenizer.json"] else None


def detect_generation(folder: str | os.PathLike[str]) -> str:
    """The generation of a checkpoint folder (one of GENERATIONS, never "demo")."""
    path = Path(folder)
    config = _read_json(path / "config.json")
    names = ("ice_text.model", "tokenizer.model", "tokenizer.json")
    has = {name: (path / name).is_file() for name in names}
    generation = _detect(path, config, has) if _is_glm(config) else None
    if generation is not None:
        return generation
    found = sorted(name for name, exists in has.items() if exists)
    raise ValueError(
        f"cannot tell the GLM generation of {path}: looked at config.json "
        f"(model_type={config.get('model_type')!r}, architectures={config.get('architectures')!r}) "
        f"and the tokenizer files {', '.join(names)} (found: {', '.join(found) or 'none'})"
    )


def load_format(folder: str | os.PathLike[str], generation: str | None = None) -> ChatFormat:
    """The ChatFormat of a checkpoint folder; `generation` overrides detection."""
    generation = generation or detect_generation(folder)
    if generation == "chatglm-6b":
        from glm_api.formats.chatglm import ChatGLM6BFormat

        return ChatGLM6BFormat(folder)
    if generation == "chatglm2":
        from glm_api.formats.chatglm2 import ChatGLM2Format

        return ChatGLM2Format(folder)
    if generation == "chatglm3":
        from glm_api.formats.chatglm3 import ChatGLM3Format

        return ChatGLM3Format(folder)
    if generation == "glm4":
        from glm_api.formats.glm4 import Glm4Format

        return Glm4Format(folder)
    if generation == "glm4-hf":
        from glm_api.formats.glm4_hf import Glm4HfFormat

        return Glm4HfFormat(folder)
    if generation == "demo":
        from glm_api.formats.demo import DemoFormat

        return DemoFormat()
    raise ValueError(f"unknown GLM generation {generation!r}; expected one of {GENERATIONS}")


__all__ = [
    "GENERATIONS",
    "ChatFormat",
    "ChatMessage",
    "IncrementalDecoder",
    "ParsedReply",
    "ToolCall",
    "detect_generation",
    "load_format",
]
