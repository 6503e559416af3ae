"""serving/logprobs.py on real tokenizers: text offsets, token bytes, distinct top-logprob keys.

Each generation's own ids: a special that decoding drops and a character split into byte
tokens must not move `text_offset`; `bytes` are a token's raw bytes (never U+FFFD's).
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from glm_api.engine.request import TokenLogprob
from glm_api.formats import load_format
from glm_api.formats.base import ChatFormat
from glm_api.formats.demo import DemoFormat
from glm_api.serving.logprobs import (
    TextOffsets,
    chat_logprobs,
    completion_logprobs,
    token_text,
)

GENERATIONS = ("chatglm-6b", "chatglm2-6b", "chatglm3-6b", "glm-4-9b-chat", "glm-4-hf")
SENTENCEPIECE = ("chatglm-6b", "chatglm2-6b", "chatglm3-6b")
#: a special each generation's decoder skips, between "a" and "🦜b"
DROPPED = {
    "chatglm-6b": "<sop>",
    "chatglm2-6b": "sop",
    "chatglm3-6b": "<|user|>",
    "glm-4-9b-chat": "<|user|>",
    "glm-4-hf": "<|user|>",
}
PARROT = ["bytes:\\xf0", "bytes:\\x9f", "bytes:\\xa6", "bytes:\\x9c"]  # 🦜, one byte per id
#: (tokens, text_offset) of encode("a") + [dropped special] + encode("🦜b")
EXPECTED = {
    "chatglm-6b": ([" a", "<sop>", " ", *PARROT, "b"], [0, 1, 1, 2, 2, 2, 2, 3]),
    "chatglm2-6b": ([" a", "sop", " ", *PARROT, "b"], [0, 1, 1, 2, 2, 2, 2, 3]),
    "chatglm3-6b": ([" a", "<|user|>", " ", *PARROT, "b"], [0, 1, 1, 2, 2, 2, 2, 3]),
    "glm-4-9b-chat": (
        ["a", "<|user|>", "bytes:\\xf0\\x9f", "bytes:\\xa6", "bytes:\\x9c", "b"],
        [0, 1, 1, 1, 1, 2],
    ),
}
EXPECTED["glm-4-hf"] = EXPECTED["glm-4-9b-chat"]


@pytest.fixture(scope="module")
def formats(assets: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, ChatFormat]:
    """The four asset tokenizers, and a -hf folder whose tokenizer.json is GLM-4's ranks."""
    from glm_api.formats.glm4_hf import write_tokenizer_json

    folders = {name: assets / "tokenizers" / name for name in GENERATIONS[:4]}
    hf = tmp_path_factory.mktemp("glm-4-hf")
    made = write_tokenizer_json(folders["glm-4-9b-chat"] / "tokenizer.model", hf / "made")
    shutil.copy(made, hf / "tokenizer.json")
    config = {"model_type": "glm", "architectures": ["GlmForCausalLM"], "eos_token_id": 151329}
    (hf / "config.json").write_text(json.dumps(config), encoding="utf-8")
    folders["glm-4-hf"] = hf
    return {name: load_format(folder) for name, folder in folders.items()}


def entries(ids: list[int], top: list[list[int]] | None = None) -> list[TokenLogprob]:
    tops = top or [[] for _ in ids]
    return [
        TokenLogprob(i, -1.0, [(t, -2.0 - k) for k, t in enumerate(ts)])
        for i, ts in zip(ids, tops, strict=True)
    ]


def test_demo_offsets_skip_specials_and_count_whole_characters() -> None:
    fmt = DemoFormat()
    ids = [ord("a"), fmt.special_tokens["<|system|>"], *"中".encode(), ord("b")]
    assert fmt.decode(ids) == "a中b"
    out = completion_logprobs(fmt, entries(ids), TextOffsets(fmt))
    assert out.tokens == ["a", "<|system|>", "bytes:\\xe4", "bytes:\\xb8", "bytes:\\xad", "b"]
    assert out.text_offset == [0, 1, 1, 1, 1, 2]


@pytest.mark.parametrize("name", GENERATIONS)
def test_offsets_per_generation(name: str, formats: dict[str, ChatFormat]) -> None:
    fmt = formats[name]
    ids = fmt.encode("a", False) + [fmt.special_tokens[DROPPED[name]]] + fmt.encode("🦜b", False)
    text = fmt.decode(ids)
    assert text == ("a 🦜b" if name in SENTENCEPIECE else "a🦜b")
    out = completion_logprobs(fmt, entries(ids), TextOffsets(fmt))
    assert (out.tokens, out.text_offset) == EXPECTED[name]
    assert text[out.text_offset[-1] :] == "b"


def test_streamed_offsets_equal_the_whole_answer(formats: dict[str, ChatFormat]) -> None:
    fmt = formats["glm-4-9b-chat"]
    ids = fmt.encode("x 你好🦜!", False)
    whole = completion_logprobs(fmt, entries(ids), TextOffsets(fmt, start=3)).text_offset
    offsets = TextOffsets(fmt, start=3)
    streamed = [completion_logprobs(fmt, [e], offsets).text_offset[0] for e in entries(ids)]
    assert streamed == whole == [3, 4, 6, 7, 7, 7, 8]  # x, " 你", 好, 🦜 in 3 ids, !
    assert offsets.end == 3 + len("x 你好🦜!")


def test_offsets_past_a_stop_cut_are_capped() -> None:
    fmt = DemoFormat()
    ids = list(b"abSTOP")  # the engine sent "ab": the stop string is cut off
    assert completion_logprobs(fmt, entries(ids), TextOffsets(fmt), end=2).text_offset == [
        0,
        1,
        2,
        2,
        2,
        2,
    ]


def test_shown_specials_advance_offsets() -> None:
    fmt = DemoFormat()
    ids = [fmt.special_tokens["<|user|>"], ord("a")]
    offsets = TextOffsets(fmt, skip_special_tokens=False)
    assert completion_logprobs(fmt, entries(ids), offsets).text_offset == [0, len("<|user|>")]


@pytest.mark.parametrize("name", GENERATIONS)
def test_chat_bytes_rebuild_the_utf8(name: str, formats: dict[str, ChatFormat]) -> None:
    fmt = formats[name]
    text = "你好🦜 ok\n"
    ids = fmt.encode(text, False)
    assert fmt.decode(ids) == text
    content = chat_logprobs(fmt, entries(ids)).content
    assert content is not None
    assert all(e.token == token_text(bytes(e.bytes or [])) for e in content)
    joined = b"".join(bytes(e.bytes or []) for e in content)
    # sentencepiece's first piece carries the dummy-prefix space that decoding drops
    assert joined == (b" " if name in SENTENCEPIECE else b"") + text.encode()
    assert "\ufffd" not in "".join(e.token for e in content)


def test_demo_chat_bytes_of_byte_tokens() -> None:
    fmt = DemoFormat()
    ids = [*"é".encode(), 0xFF]  # a split character, then a byte that is never UTF-8
    content = chat_logprobs(fmt, entries(ids, [[0xA9, 0xA8]] * 3)).content
    assert content is not None
    assert [(e.token, e.bytes) for e in content] == [
        ("bytes:\\xc3", [0xC3]),
        ("bytes:\\xa9", [0xA9]),
        ("bytes:\\xff", [0xFF]),
    ]
    assert [(t.token, t.bytes) for t in content[0].top_logprobs] == [
        ("bytes:\\xa9", [0xA9]),
        ("bytes:\\xa8", [0xA8]),
    ]


def test_distinct_byte_ids_give_distinct_top_keys(formats: dict[str, ChatFormat]) -> None:
    demo = DemoFormat()
    out = completion_logprobs(demo, entries([0xE4], [[0xE4, 0xE5, 0xB8]]), TextOffsets(demo))
    assert out.top_logprobs == [{"bytes:\\xe4": -2.0, "bytes:\\xe5": -3.0, "bytes:\\xb8": -4.0}]
    chatglm2 = formats["chatglm2-6b"]
    parrot = chatglm2.encode("🦜", False)[1:]  # <0xF0> <0x9F> <0xA6> <0x9C>
    out = completion_logprobs(chatglm2, entries(parrot[:1], [parrot]), TextOffsets(chatglm2))
    assert out.top_logprobs == [dict(zip(PARROT, [-2.0, -3.0, -4.0, -5.0], strict=True))]


def test_ids_with_the_same_bytes_keep_distinct_keys(formats: dict[str, ChatFormat]) -> None:
    fmt = formats["chatglm2-6b"]
    spaces = [i for i in range(fmt.vocab_size) if fmt.token_bytes(i) == b" "]
    assert spaces == [35, 30910]  # the byte piece <0x20> and the piece `▁`
    out = completion_logprobs(fmt, entries([30910], [[30910, 35]]), TextOffsets(fmt))
    assert out.top_logprobs == [{" ": -2.0, "token_id:35": -3.0}]


def test_hf_token_bytes_equal_tiktoken_bytes(formats: dict[str, ChatFormat]) -> None:
    glm4, hf = formats["glm-4-9b-chat"], formats["glm-4-hf"]
    assert hf.vocab_size == glm4.vocab_size == 151343
    assert [hf.token_bytes(i) for i in range(hf.vocab_size)] == [
        glm4.token_bytes(i) for i in range(glm4.vocab_size)
    ]
    assert hf.token_bytes(hf.vocab_size) == glm4.token_bytes(glm4.vocab_size) == b""
