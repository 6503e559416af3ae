"""The -hf layout: tokenizer.json + chat template give the same ids as the original GLM-4."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from glm_api.formats import load_format
from glm_api.formats.base import ChatFormat, ChatMessage, ToolCall

TOOLS = [
    {
        "type": "function",
        "function": {
            "name": "get_weather",
            "description": "查询城市天气",
            "parameters": {"type": "object", "properties": {"city": {"type": "string"}}},
        },
    },
    {"type": "function", "function": {"name": "now", "parameters": {"type": "object"}}},
]
CHATS = [
    [ChatMessage("user", "你好")],
    [ChatMessage("system", "You are terse."), ChatMessage("user", "Hi\n\n  code:\tx = 1")],
    [
        ChatMessage("system", "你是一个天气助手。"),
        ChatMessage("user", "北京天气怎么样？"),
        ChatMessage("assistant", "", tool_calls=[ToolCall("get_weather", '{"city": "北京"}')]),
        ChatMessage("tool", '{"temperature": 20}'),
        ChatMessage("assistant", "北京今天20度。🙂"),
        ChatMessage("user", "谢谢"),
    ],
]


@pytest.mark.parametrize("template", ["glm-4-9b-chat", "glm-4-0414"])
@pytest.mark.parametrize("chat", range(len(CHATS)))
def test_hf_matches_glm4_without_tools(
    template: str, chat: int, hf_formats: dict[str, ChatFormat], formats: dict[str, ChatFormat]
) -> None:
    glm4, hf = formats["glm-4-9b-chat"], hf_formats[template]
    assert hf.chat_prompt(CHATS[chat]) == glm4.chat_prompt(CHATS[chat])
    assert hf.legacy_prompt("再见", [("你好", "你好！")]) == glm4.legacy_prompt(
        "再见", [("你好", "你好！")]
    )


def test_hf_matches_glm4_with_tools_under_the_original_template(
    hf_formats: dict[str, ChatFormat], formats: dict[str, ChatFormat]
) -> None:
    hf, glm4 = hf_formats["glm-4-9b-chat"], formats["glm-4-9b-chat"]
    assert hf.chat_prompt(CHATS[2], TOOLS) == glm4.chat_prompt(CHATS[2], TOOLS)


def test_hf_renders_its_own_template_tool_format(hf_formats: dict[str, ChatFormat]) -> None:
    hf = hf_formats["glm-4-0414"]
    text = hf.decode(hf.chat_prompt(CHATS[2], TOOLS), skip_special_tokens=False)
    assert text.startswith("[gMASK]<sop><|system|>\n你是一个名为 ChatGLM 的人工智能助手。")
    # trim_blocks eats the first newline after `{%- endif -%}`-style tags, as in transformers
    assert '\n\n# 可用工具\n## get_weather\n\n{\n    "name": "get_weather",' in text
    assert "请使用 Json 格式表示调用的参数。\n## now\n\n" in text
    assert text.endswith(
        '<|system|>\n你是一个天气助手。<|user|>\n北京天气怎么样？<|assistant|>get_weather\n{"city": "北京"}'
        '<|observation|>\n{"temperature": 20}<|assistant|>\n北京今天20度。🙂<|user|>\n谢谢<|assistant|>'
    )


def test_hf_template_errors_surface(hf_formats: dict[str, ChatFormat]) -> None:
    with pytest.raises(ValueError, match="unknown role"):
        hf_formats["glm-4-0414"].chat_prompt([ChatMessage("narrator", "x")])


def test_hf_specials_stops_and_vocab(hf_formats: dict[str, ChatFormat]) -> None:
    hf = hf_formats["glm-4-0414"]
    assert hf.stop_token_ids == (151329, 151336, 151338)
    assert hf.special_tokens["[gMASK]"] == 151331 and hf.special_tokens["<|observation|>"] == 151338
    assert hf.vocab_size == 151343
    assert hf.encode_pieces("hello world") == ["hello", " world"]


def test_hf_parses_tool_calls(hf_formats: dict[str, ChatFormat]) -> None:
    reply = hf_formats["glm-4-0414"].parse_reply('get_weather\n{"city": "上海"}', tools_given=True)
    assert reply.content == ""
    assert reply.tool_calls == [ToolCall("get_weather", '{"city": "上海"}')]


def test_hf_folder_without_template_uses_glm4_rules(
    hf_tokenizer_json: Path, tmp_path: Path, formats: dict[str, ChatFormat]
) -> None:
    shutil.copy(hf_tokenizer_json, tmp_path / "tokenizer.json")
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "glm4"}))
    hf, glm4 = load_format(tmp_path), formats["glm-4-9b-chat"]
    for chat in CHATS:
        assert hf.chat_prompt(chat) == glm4.chat_prompt(chat)
        assert hf.chat_prompt(chat, TOOLS) == glm4.chat_prompt(chat, TOOLS)
    assert hf.stop_token_ids == (151329, 151336, 151338)  # from the special tokens
