"""Tool calling in the GLM formats: what the prompt says about tools, and parsing replies.

Owns the text the models were trained on for tools (ChatGLM3's system JSON, GLM-4's
`# 可用工具` section), the way a past call is written back into the history, and the parsers
that turn a finished reply into `ToolCall`s. Token ids do not belong here.
"""

from __future__ import annotations

import ast
import json
import re
from collections.abc import Sequence
from typing import Any

from glm_api.formats.base import ParsedReply, ToolCall

#: ChatGLM3's openai_api demo opens the tool system message with this sentence.
CHATGLM3_TOOL_PROMPT = (
    "Answer the following questions as best as you can. You have access to the following tools:"
)
#: The preamble of glm-4-9b-chat's chat template when tools are given.
GLM4_TOOL_PREAMBLE = (
    "你是一个名为 ChatGLM 的人工智能助手。你是基于智谱AI训练的语言模型 GLM-4 模型开发的，"
    "你的任务是针对用户的问题和要求提供适当的答复和支持。"
)
GLM4_TOOL_SUFFIX = "在调用上述函数时，请使用 Json 格式表示调用的参数。"

_CODE_BLOCK = re.compile(r"```(?:python)?\n(.*?)\n?```", re.DOTALL)
_NAME = re.compile(r"^[\w.\-]+$")


def tool_functions(tools: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """The function schemas of OpenAI tools (`{"type": "function", "function": {...}}`)."""
    return [tool["function"] if "function" in tool else tool for tool in tools]


def chatglm3_system_text(system: str | None, tools: Sequence[dict[str, Any]]) -> str:
    """ChatGLM3's system message with tools: text, newline, the functions as indented JSON."""
    text = system if system else CHATGLM3_TOOL_PROMPT
    return text + "\n" + json.dumps(tool_functions(tools), indent=4, ensure_ascii=False)


def glm4_tools_text(tools: Sequence[dict[str, Any]]) -> str:
    """The body of glm-4-9b-chat's tool system message (after `<|system|>`).

    Exactly what transformers renders from the checkpoint's chat template: the template
    writes `\\n\\n## {name}` right after a `{% if %}` tag, and trim_blocks=True eats the
    first of those newlines, so each section starts with a single newline.
    """
    parts = ["\n", GLM4_TOOL_PREAMBLE, "\n\n# 可用工具"]
    for function in tool_functions(tools):
        schema = json.dumps(function, indent=4, ensure_ascii=False)
        parts.append(f"\n## {function['name']}\n\n{schema}\n{GLM4_TOOL_SUFFIX}")
    return "".join(parts)


def chatglm3_call_text(call: ToolCall) -> str:
    """A past call as ChatGLM3 wrote it after `<|assistant|>{name}\\n`."""
    arguments = json.loads(call.arguments or "{}")
    if not isinstance(arguments, dict):
        raise ValueError(f"tool call {call.name!r}: arguments must be a JSON object")
    keywords = ", ".join(f"{key}={value!r}" for key, value in arguments.items())
    return f"```python\ntool_call({keywords})\n```"


def _chatglm3_arguments(body: str) -> dict[str, Any] | None:
    """The keyword arguments of `tool_call(...)` in a code block, read without eval."""
    match = _CODE_BLOCK.search(body)
    code = (match.group(1) if match else body).strip()
    try:
        node = ast.parse(code, mode="eval").body
        if not (isinstance(node, ast.Call) and getattr(node.func, "id", None) == "tool_call"):
            return None
        if node.args:
            return None
        return {kw.arg: ast.literal_eval(kw.value) for kw in node.keywords if kw.arg}
    except (SyntaxError, ValueError):
        return None


def _segments(text: str) -> list[tuple[str, str]]:
    """(metadata, body) per `<|assistant|>` turn; metadata is the first line of each."""
    out = []
    for segment in text.split("<|assistant|>"):
        metadata, _, body = segment.partition("\n") if "\n" in segment else ("", "", segment)
        out.append((metadata.strip(), body))
    return out


def parse_chatglm3(text: str, tools_given: bool) -> ParsedReply:
    """ChatGLM3: a call is `{name}\\n` then a python block calling `tool_call(k=v, ...)`."""
    if not tools_given:
        return ParsedReply(content=text)  # serving already dropped the opening newline
    calls: list[ToolCall] = []
    contents: list[str] = []
    for metadata, body in _segments(text):
        arguments = _chatglm3_arguments(body) if _NAME.match(metadata) else None
        if arguments is None:
            contents.append(f"{metadata}\n{body}".strip() if metadata else body.strip())
            continue
        calls.append(ToolCall(metadata, json.dumps(arguments, ensure_ascii=False)))
    return ParsedReply(content="\n".join(c for c in contents if c), tool_calls=calls)


def parse_glm4(text: str, tools_given: bool) -> ParsedReply:
    """GLM-4: a call is `{name}\\n{json arguments}` (its openai_api_server's rule)."""
    if not tools_given:
        return ParsedReply(content=text)  # serving already dropped the opening newline
    calls: list[ToolCall] = []
    contents: list[str] = []
    for metadata, body in _segments(text):
        arguments = body.strip()
        if _NAME.match(metadata) and arguments.startswith("{"):
            try:
                parsed = json.loads(arguments)
            except json.JSONDecodeError:
                parsed = None
            if isinstance(parsed, dict):
                calls.append(ToolCall(metadata, json.dumps(parsed, ensure_ascii=False)))
                continue
        contents.append(f"{metadata}\n{body}".strip() if metadata else body.strip())
    return ParsedReply(content="\n".join(c for c in contents if c), tool_calls=calls)
