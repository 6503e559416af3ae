"""Every vector of tokenizer-vectors.json, for every generation (and GLM-4 through -hf)."""

from __future__ import annotations

from typing import Any

import pytest

from glm_api.formats.base import ChatFormat, ChatMessage

ASSET_FOLDERS = {
    "chatglm-6b": "chatglm-6b",
    "chatglm2-6b": "chatglm2",
    "chatglm3-6b": "chatglm3",
    "glm-4-9b-chat": "glm4",
}


def _check(fmt: ChatFormat, vector: dict[str, Any]) -> None:
    for case in vector.get("encode", []):
        assert fmt.encode(case["text"]) == case["ids"]
        if "tokens" in case:
            assert fmt.encode_pieces(case["text"]) == case["tokens"]
    for case in vector.get("encode_ordinary", []):
        assert fmt.encode(case["text"], add_special_tokens=False) == case["ids"]
        assert fmt.decode(case["ids"]) == case["text"]
    for case in vector.get("chat", []):
        messages = [ChatMessage(**m) for m in case["messages"]]
        assert fmt.chat_prompt(messages) == case["ids"]
    for name, token_id in vector["special"].items():
        assert fmt.special_tokens[name] == token_id
    assert list(fmt.stop_token_ids) == vector["stop_ids"]


@pytest.mark.parametrize("folder", list(ASSET_FOLDERS))
def test_vectors(folder: str, formats: dict[str, ChatFormat], vectors: dict[str, Any]) -> None:
    fmt = formats[folder]
    assert fmt.name == ASSET_FOLDERS[folder]
    _check(fmt, vectors[folder])


@pytest.mark.parametrize("template", ["glm-4-9b-chat", "glm-4-0414"])
def test_glm4_vectors_through_hf(
    template: str, hf_formats: dict[str, ChatFormat], vectors: dict[str, Any]
) -> None:
    _check(hf_formats[template], vectors["glm-4-9b-chat"])


def test_chatglm6b_tokenize_seed_example(formats: dict[str, ChatFormat]) -> None:
    fmt = formats["chatglm-6b"]
    text = "如果给你一个机会，你会想逃离你所在的虚拟世界吗？"
    pieces = fmt.encode_pieces(text)
    assert pieces[0] == "▁如果" and pieces[-1] == "?" and len(pieces) == 13
    assert fmt.encode(text)[-2:] == [130001, 130004]
    # the model's normaliser folds full-width punctuation: decoding gives it back half-width
    assert fmt.decode(fmt.encode(text)) == "如果给你一个机会,你会想逃离你所在的虚拟世界吗?"


def test_vocab_sizes(formats: dict[str, ChatFormat], vectors: dict[str, Any]) -> None:
    assert formats["chatglm-6b"].vocab_size == 130344  # ice_text.model pieces (<= 130528 rows)
    assert formats["chatglm2-6b"].vocab_size == 64794
    assert formats["chatglm3-6b"].vocab_size == 64798
    glm4 = vectors["glm-4-9b-chat"]
    assert formats["glm-4-9b-chat"].vocab_size == glm4["regular_vocab_size"] + 14
    assert formats["glm-4-9b-chat"].vocab_size <= glm4["padded_vocab_size"]
