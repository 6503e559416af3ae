"""`glm-api tokenize` on folders holding only config.json and the tokenizer files."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from glm_api.cli import main

TOKENIZER_FILES = ("config.json", "tokenizer_config.json", "ice_text.model", "tokenizer.model")


def _bare_folder(assets: Path, name: str, tmp_path: Path) -> Path:
    folder = tmp_path / name
    folder.mkdir()
    for file in TOKENIZER_FILES:
        if (assets / "tokenizers" / name / file).exists():
            shutil.copy(assets / "tokenizers" / name / file, folder / file)
    return folder


def _vectors(assets: Path) -> dict:
    return json.loads((assets / "tokenizer-vectors.json").read_text(encoding="utf-8"))


@pytest.mark.parametrize("name", ["chatglm-6b", "chatglm2-6b", "glm-4-9b-chat"])
def test_tokenize_reproduces_encode_vectors(assets, tmp_path, capsys, name):
    folder = _bare_folder(assets, name, tmp_path)
    for vector in _vectors(assets)[name]["encode"]:
        assert main(["tokenize", "--model", str(folder), vector["text"]]) == 0
        printed = json.loads(capsys.readouterr().out)
        assert printed["ids"] == vector["ids"]
        if "tokens" in vector:
            assert printed["tokens"] == vector["tokens"]


@pytest.mark.parametrize("name", ["chatglm3-6b", "glm-4-9b-chat"])
def test_tokenize_chat_reproduces_chat_vectors(assets, tmp_path, capsys, name):
    folder = _bare_folder(assets, name, tmp_path)
    for vector in _vectors(assets)[name]["chat"]:
        messages = json.dumps(vector["messages"], ensure_ascii=False)
        assert main(["tokenize", "--model", str(folder), "--chat", messages]) == 0
        assert json.loads(capsys.readouterr().out)["ids"] == vector["ids"]


def test_tokenize_unknown_folder_is_one_clear_line(tmp_path, capsys):
    (tmp_path / "config.json").write_text("{}")
    assert main(["tokenize", "--model", str(tmp_path), "hello"]) == 1
    err = capsys.readouterr().err
    assert err.startswith("glm-api tokenize: ") and "Traceback" not in err
