"""Fixtures for the format tests: the real tokenizers, their vectors, and -hf test folders."""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from glm_api.formats import load_format
from glm_api.formats.base import ChatFormat

DATA = Path(__file__).parent / "data"
ASSET_FOLDERS = ("chatglm-6b", "chatglm2-6b", "chatglm3-6b", "glm-4-9b-chat")


@pytest.fixture(scope="session")
def vectors(assets: Path) -> dict[str, Any]:
    return json.loads((assets / "tokenizer-vectors.json").read_text(encoding="utf-8"))


@pytest.fixture(scope="session")
def formats(assets: Path) -> dict[str, ChatFormat]:
    """One loaded format per asset folder (loading once keeps the module fast)."""
    return {folder: load_format(assets / "tokenizers" / folder) for folder in ASSET_FOLDERS}


@pytest.fixture(scope="session")
def hf_tokenizer_json(assets: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tokenizer.json made from glm-4-9b-chat's tokenizer.model, once per session."""
    from glm_api.formats.glm4_hf import write_tokenizer_json

    out = tmp_path_factory.mktemp("glm4-tokenizer-json")
    return write_tokenizer_json(assets / "tokenizers" / "glm-4-9b-chat" / "tokenizer.model", out)


@pytest.fixture(scope="session")
def make_hf_folder(
    hf_tokenizer_json: Path, tmp_path_factory: pytest.TempPathFactory
) -> Callable[[str], Path]:
    """-hf checkpoint folder (config.json, tokenizer.json, chat_template.jinja) per template."""

    def make(template: str) -> Path:
        folder = tmp_path_factory.mktemp(f"hf-{template}")
        shutil.copy(hf_tokenizer_json, folder / "tokenizer.json")
        shutil.copy(DATA / f"{template}.jinja", folder / "chat_template.jinja")
        config = {
            "model_type": "glm",
            "architectures": ["GlmForCausalLM"],
            "eos_token_id": [151329, 151336, 151338],
        }
        (folder / "config.json").write_text(json.dumps(config), encoding="utf-8")
        return folder

    return make


@pytest.fixture(scope="session")
def hf_formats(make_hf_folder: Callable[[str], Path]) -> dict[str, ChatFormat]:
    """glm4-hf formats for the two test templates (original glm-4-9b-chat, and 0414 style)."""
    return {name: load_format(make_hf_folder(name)) for name in ("glm-4-9b-chat", "glm-4-0414")}
