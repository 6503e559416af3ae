"""Tool-call parsing of finished replies (ChatGLM3 code calls, GLM-4 name + JSON)."""

from __future__ import annotations

import json

from glm_api.formats.base import ChatFormat, ParsedReply, ToolCall
from glm_api.formats.demo import DemoFormat
from glm_api.formats.tools import chatglm3_call_text, parse_chatglm3, parse_glm4


def test_chatglm3_call_is_parsed_without_eval() -> None:
    reply = "get_weather\n```python\ntool_call(city='北京', days=3, detail=True, tags=['a'])\n```"
    parsed = parse_chatglm3(reply, tools_given=True)
    assert parsed.content == ""
    assert parsed.tool_calls == [
        ToolCall(
            "get_weather",
            json.dumps(
                {"city": "北京", "days": 3, "detail": True, "tags": ["a"]}, ensure_ascii=False
            ),
        )
    ]


def test_chatglm3_plain_answers_stay_text() -> None:
    assert parse_chatglm3("\n北京今天晴。", tools_given=True) == ParsedReply("北京今天晴。")
    assert parse_chatglm3("get_weather\n```python\nimport os\n```", True).tool_calls == []
    assert (
        parse_chatglm3("get_weather\n```python\ntool_call(x=os.system('ls'))\n```", True).tool_calls
        == []
    )
    text = "get_weather\n```python\ntool_call(city='x')\n```"
    assert parse_chatglm3(text, tools_given=False) == ParsedReply(text)


def test_chatglm3_written_calls_parse_back() -> None:
    call = ToolCall("search", '{"query": "GLM \'4\'", "limit": 5}')
    text = "search\n" + chatglm3_call_text(call)
    assert parse_chatglm3(text, True).tool_calls == [
        ToolCall("search", '{"query": "GLM \'4\'", "limit": 5}')
    ]


def test_glm4_calls() -> None:
    parsed = parse_glm4('get_weather\n{"city": "北京"}', tools_given=True)
    assert parsed == ParsedReply("", [ToolCall("get_weather", '{"city": "北京"}')])
    two = parse_glm4('a\n{"x": 1}<|assistant|>b\n{"y": [2]}', tools_given=True)
    assert two.tool_calls == [ToolCall("a", '{"x": 1}'), ToolCall("b", '{"y": [2]}')]


def test_glm4_non_calls_stay_text() -> None:
    assert parse_glm4("\n你好！", tools_given=True) == ParsedReply("你好！")
    assert parse_glm4("Note\n{not json", tools_given=True) == ParsedReply("Note\n{not json")
    assert parse_glm4("Hello there!\n{}", tools_given=True) == ParsedReply("Hello there!\n{}")
    assert parse_glm4('f\n{"a": 1}', tools_given=False) == ParsedReply('f\n{"a": 1}')


def test_formats_use_their_parser(formats: dict[str, ChatFormat]) -> None:
    code = "f\n```python\ntool_call(a=1)\n```"
    assert formats["chatglm3-6b"].parse_reply(code, True).tool_calls == [ToolCall("f", '{"a": 1}')]
    assert formats["glm-4-9b-chat"].parse_reply('f\n{"a": 1}', True).tool_calls == [
        ToolCall("f", '{"a": 1}')
    ]
    assert DemoFormat().parse_reply('f\n{"a": 1}', True).tool_calls == [ToolCall("f", '{"a": 1}')]
    assert formats["chatglm2-6b"].parse_reply('f\n{"a": 1}', True) == ParsedReply('f\n{"a": 1}')
