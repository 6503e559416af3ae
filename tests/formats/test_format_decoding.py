"""Incremental decoding: deltas add up to decode(all) and never hold a broken character."""

from __future__ import annotations

import random

import pytest

from glm_api.formats.base import ChatFormat
from glm_api.formats.decoding import ByteTableDecoder, WindowDecoder, decode_table
from glm_api.formats.demo import DemoFormat

TEXTS = [
    "你好，世界！今天天气不错。",
    "Emoji: 🙂🚀👍🦜 and 𝔘𝔫𝔦𝔠𝔬𝔡𝔢 𠀀 done",
    'def main():\n    print("你好 🌍")\t# 注释\n\n    return {"a": [1, 2]}\n',
    "  leading spaces, trailing  ",
]


def _stream(fmt: ChatFormat, ids: list[int], chunk: int, skip: bool = True) -> list[str]:
    decoder = fmt.new_decoder(skip_special_tokens=skip)
    deltas = [decoder.step(ids[i : i + chunk]) for i in range(0, len(ids), chunk)]
    return [*deltas, decoder.flush()]


def _check_stream(fmt: ChatFormat, ids: list[int]) -> None:
    for chunk in (1, 3):
        deltas = _stream(fmt, ids, chunk)
        assert "".join(deltas) == fmt.decode(ids)
        assert not any("\ufffd" in delta for delta in deltas)


@pytest.mark.parametrize("folder", ["chatglm-6b", "chatglm2-6b", "chatglm3-6b", "glm-4-9b-chat"])
def test_stream_equals_decode(folder: str, formats: dict[str, ChatFormat]) -> None:
    fmt = formats[folder]
    for text in TEXTS:
        ids = fmt.encode(text)  # with the generation's specials, which decoding skips
        _check_stream(fmt, ids)
        if folder != "chatglm-6b":  # v1's normaliser folds full-width punctuation
            assert fmt.decode(ids) == text


@pytest.mark.parametrize("template", ["glm-4-0414"])
def test_hf_stream_equals_decode(template: str, hf_formats: dict[str, ChatFormat]) -> None:
    fmt = hf_formats[template]
    for text in TEXTS:
        ids = fmt.encode(text)
        _check_stream(fmt, ids)
        assert fmt.decode(ids) == text


def test_multibyte_pieces_are_held_back(formats: dict[str, ChatFormat]) -> None:
    for folder in ("chatglm-6b", "chatglm3-6b"):  # byte-fallback pieces <0xF0> <0x9F> ...
        fmt = formats[folder]
        ids = fmt.encode("🦜", add_special_tokens=False)
        assert [fmt.id_to_piece(i) for i in ids[1:]] == ["\ufffd"] * 4
        assert _stream(fmt, ids, 1) == ["", "", "", "", "🦜", ""]
    glm4 = formats["glm-4-9b-chat"]
    ids4 = glm4.encode("𠀀", add_special_tokens=False)
    assert len(ids4) > 1 and _stream(glm4, ids4, 1)[-2:] == ["𠀀", ""]


def test_sentencepiece_decode_matches_sentencepiece(formats: dict[str, ChatFormat]) -> None:
    glm2, v1 = formats["chatglm2-6b"], formats["chatglm-6b"]

    def v1_reference(ids: list[int]) -> str:  # ChatGLM-6B: sp.decode, then undo <n> etc.
        text = v1._sp.decode(ids).replace("<n>", "\n").replace("<|tab|>", "\t")  # type: ignore[attr-defined]
        for n in range(2, 81):
            text = text.replace(f"<|blank_{n}|>", " " * n)
        return text

    for text in TEXTS:
        ids = glm2.encode(text, add_special_tokens=False)
        assert glm2.decode(ids) == glm2._sp.decode(ids)  # type: ignore[attr-defined]
        ids = v1.encode(text)
        assert v1.decode(ids) == v1_reference(ids)


def test_chatglm6b_reverses_its_whitespace_pieces(formats: dict[str, ChatFormat]) -> None:
    fmt = formats["chatglm-6b"]
    text = "a\nb\tc" + " " * 7 + "d" + " " * 100 + "e"
    ids = fmt.encode(text, add_special_tokens=False)
    assert 4 in ids and 130008 in ids  # <n>, <|tab|>
    assert fmt.decode(ids) == text
    assert "".join(_stream(fmt, ids, 1)) == text


def test_special_tokens_shown_when_not_skipped(formats: dict[str, ChatFormat]) -> None:
    glm4 = formats["glm-4-9b-chat"]
    ids = glm4.chat_prompt([])
    assert glm4.decode(ids, skip_special_tokens=False) == "[gMASK]<sop><|assistant|>"
    assert "".join(_stream(glm4, ids, 1, skip=False)) == "[gMASK]<sop><|assistant|>"
    assert glm4.decode(ids) == ""
    glm3 = formats["chatglm3-6b"]
    assert glm3.decode(glm3.encode("hi"), skip_special_tokens=False) == "[gMASK]sophi"


def test_invalid_bytes_decode_like_a_whole_decode() -> None:
    table = [bytes([b]) for b in range(256)]
    ids = list(b"ok\xe4\xbd") + list(b"!")  # a cut-off character, then more text
    assert decode_table(table, ids, frozenset()) == "ok\ufffd!"
    decoder = ByteTableDecoder(table, frozenset())
    assert "".join(decoder.step([i]) for i in ids) + decoder.flush() == "ok\ufffd!"


def test_window_decoder_slides() -> None:
    demo = DemoFormat()
    seen: list[int] = []

    def decode(ids: list[int]) -> str:
        seen.append(len(ids))
        return demo.decode(ids)

    decoder = WindowDecoder(decode)
    ids = demo.encode_ordinary("窗口" * 50)
    text = "".join(decoder.step([i]) for i in ids) + decoder.flush()
    assert text == "窗口" * 50
    assert max(seen) <= 6  # the window never grows past two characters' bytes


def test_demo_round_trips_arbitrary_utf8() -> None:
    demo = DemoFormat()
    rng = random.Random(0)
    ranges = [(0x20, 0x7E), (0xA0, 0x2FF), (0x4E00, 0x9FFF), (0x1F300, 0x1FAFF), (0x10000, 0x10FFF)]
    for _ in range(50):
        text = "".join(chr(rng.randint(*rng.choice(ranges))) for _ in range(rng.randint(0, 40)))
        ids = demo.encode(text)
        assert ids[:2] == [258, 260] and all(0 <= i < 256 for i in ids[2:])
        assert demo.decode(ids) == text
        deltas = _stream(demo, ids, rng.randint(1, 4))
        assert "".join(deltas) == text and not any("\ufffd" in d for d in deltas)
