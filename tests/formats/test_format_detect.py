"""Generation detection from a folder's files (config.json + tokenizer files only)."""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from pathlib import Path

import pytest

from glm_api.formats import detect_generation, load_format
from glm_api.formats.demo import DemoFormat

TOKENIZER_FILES = {
    "chatglm-6b": ["ice_text.model"],
    "chatglm2-6b": ["tokenizer.model", "tokenizer_config.json"],
    "chatglm3-6b": ["tokenizer.model", "tokenizer_config.json"],
    "glm-4-9b-chat": ["tokenizer.model"],
}
EXPECTED = {
    "chatglm-6b": "chatglm-6b",
    "chatglm2-6b": "chatglm2",
    "chatglm3-6b": "chatglm3",
    "glm-4-9b-chat": "glm4",
}


def _copy(assets: Path, folder: str, dest: Path, files: list[str]) -> Path:
    dest.mkdir()
    for name in ["config.json", *files]:
        shutil.copy(assets / "tokenizers" / folder / name, dest / name)
    return dest


@pytest.mark.parametrize("folder", list(TOKENIZER_FILES))
def test_detects_each_asset_folder(folder: str, assets: Path, tmp_path: Path) -> None:
    # a neutral folder name: detection must come from the files
    dest = _copy(assets, folder, tmp_path / "checkpoint", TOKENIZER_FILES[folder])
    assert detect_generation(dest) == EXPECTED[folder]
    assert load_format(str(dest)).name == EXPECTED[folder]


def test_chatglm2_and_3_without_tokenizer_config(assets: Path, tmp_path: Path) -> None:
    glm2 = _copy(assets, "chatglm2-6b", tmp_path / "a", ["tokenizer.model"])
    glm3 = _copy(assets, "chatglm3-6b", tmp_path / "b", ["tokenizer.model"])
    assert detect_generation(glm2) == "chatglm2"  # config.json's _name_or_path
    assert detect_generation(glm3) == "chatglm3"


def test_chatglm3_by_role_tokens_and_default(assets: Path, tmp_path: Path) -> None:
    folder = _copy(assets, "chatglm2-6b", tmp_path / "c", ["tokenizer.model"])
    config = json.loads((folder / "config.json").read_text())
    config.pop("_name_or_path")
    (folder / "config.json").write_text(json.dumps(config))
    assert detect_generation(folder) == "chatglm3"  # no evidence: the superset format
    (folder / "tokenizer_config.json").write_text(
        json.dumps({"name_or_path": "x/chatglm2-6b-int4"})
    )
    assert detect_generation(folder) == "chatglm2"
    chat = {"name_or_path": "x/chatglm2-6b", "chat_template": "{{ '<|user|>' }}"}
    (folder / "tokenizer_config.json").write_text(json.dumps(chat))
    assert detect_generation(folder) == "chatglm3"
    assert load_format(folder, generation="chatglm2").name == "chatglm2"


def test_detects_hf_folder(make_hf_folder: Callable[[str], Path]) -> None:
    folder = make_hf_folder("glm-4-0414")
    assert detect_generation(folder) == "glm4-hf"
    assert load_format(folder).name == "glm4-hf"


def test_unknown_folders_raise(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="model_type=None.*found: none"):
        detect_generation(tmp_path)
    (tmp_path / "config.json").write_text(
        json.dumps({"model_type": "llama", "architectures": ["X"]})
    )
    (tmp_path / "tokenizer.json").write_text("{}")
    with pytest.raises(ValueError, match="model_type='llama'.*tokenizer.json"):
        detect_generation(tmp_path)
    with pytest.raises(ValueError, match="unknown GLM generation"):
        load_format(tmp_path, generation="gpt")


def test_demo_format() -> None:
    demo = DemoFormat()
    assert demo.vocab_size == 266
    assert (
        demo.special_tokens["<|endoftext|>"] == 256
        and demo.special_tokens["<|observation|>"] == 265
    )
    assert demo.stop_token_ids == (256, 263, 265)
    assert demo.legacy_prompt("hi", []) == [258, 260, 263, 10, 104, 105, 264]
    assert load_format("unused", generation="demo").name == "demo"
