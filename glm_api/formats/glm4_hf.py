"""The GLM-4 `-hf` layout (GLM-4-9B-chat-hf, GLM-4-0414, GLM-Edge): tokenizer.json + a template.

Reads `tokenizer.json` with the `tokenizers` package and renders the checkpoint's own chat
template (tokenizer_config.json `chat_template` or chat_template.jinja) with jinja2 the way
transformers does. Tool calls follow those templates: a call is an assistant turn whose
metadata is the function name and whose content is the JSON arguments; a result is an
`observation` turn. `write_tokenizer_json` makes such a tokenizer.json from the original
tiktoken file (transformers is imported only there: it is a test/bench dependency).
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Sequence
from datetime import datetime
from pathlib import Path
from typing import Any

from jinja2.exceptions import TemplateError
from jinja2.sandbox import ImmutableSandboxedEnvironment
from tokenizers import Tokenizer, decoders

from glm_api.formats.base import ChatFormat, ChatMessage, IncrementalDecoder, ParsedReply
from glm_api.formats.chatglm import history_to_messages
from glm_api.formats.decoding import WindowDecoder
from glm_api.formats.tools import parse_glm4

_STOP_NAMES = ("<|endoftext|>", "<|user|>", "<|observation|>")
_BYTE_FALLBACK_PIECE = re.compile(r"<0x([0-9A-Fa-f]{2})>")
#: Used when a folder ships no template: GLM-4-9B-chat's rules (as glm4.py renders them).
DEFAULT_TEMPLATE = (
    "[gMASK]<sop>{% if tools %}<|system|>\n"
    "你是一个名为 ChatGLM 的人工智能助手。你是基于智谱AI训练的语言模型 GLM-4 模型开发的，"
    "你的任务是针对用户的问题和要求提供适当的答复和支持。\n\n# 可用工具"
    "{% for tool in tools %}{% set function = tool.function if tool.function else tool %}"
    # an expression, not text after a tag: trim_blocks would eat a leading newline
    "{{ '\\n## ' + function.name }}\n\n{{ function | tojson(indent=4) }}\n"
    "在调用上述函数时，请使用 Json 格式表示调用的参数。{% endfor %}{% endif %}"
    "{% for m in messages %}{% if m.content %}<|{{ m.role }}|>{{ m.metadata }}\n{{ m.content }}"
    "{% endif %}{% endfor %}{% if add_generation_prompt %}<|assistant|>{% endif %}"
)


def _byte_level_bytes() -> dict[str, int]:
    """GPT-2's `bytes_to_unicode` inverted: which byte each character of a byte-level piece is."""
    shown = [*range(0x21, 0x7F), *range(0xA1, 0xAD), *range(0xAE, 0x100)]  # bytes kept as is
    hidden = [b for b in range(256) if b not in shown]  # moved to U+0100 onwards, in order
    table = {chr(b): b for b in shown}
    table.update({chr(0x100 + i): b for i, b in enumerate(hidden)})
    return table


_BYTE_LEVEL_BYTES = _byte_level_bytes()


def _raise_exception(message: str) -> None:
    raise TemplateError(message)


def _tojson(
    value: Any,
    ensure_ascii: bool = False,
    indent: int | None = None,
    separators: tuple[str, str] | None = None,
    sort_keys: bool = False,
) -> str:
    # transformers' tojson: unlike jinja2's own, it keeps non-ASCII text and HTML as is.
    return json.dumps(
        value, ensure_ascii=ensure_ascii, indent=indent, separators=separators, sort_keys=sort_keys
    )


def _environment() -> ImmutableSandboxedEnvironment:
    env = ImmutableSandboxedEnvironment(
        trim_blocks=True, lstrip_blocks=True, extensions=["jinja2.ext.loopcontrols"]
    )
    env.filters["tojson"] = _tojson
    env.globals["raise_exception"] = _raise_exception
    env.globals["strftime_now"] = lambda fmt: datetime.now().strftime(fmt)
    return env


def _read_json(path: Path) -> dict[str, Any]:
    return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else {}


def read_chat_template(folder: Path) -> str:
    """The folder's chat template: chat_template.jinja, else tokenizer_config.json's, else
    `DEFAULT_TEMPLATE`."""
    jinja_file = folder / "chat_template.jinja"
    if jinja_file.is_file():
        return jinja_file.read_text(encoding="utf-8")
    template = _read_json(folder / "tokenizer_config.json").get("chat_template")
    if isinstance(template, list):  # named templates: take the default one
        named = {item["name"]: item["template"] for item in template}
        template = named.get("default", next(iter(named.values()), None))
    return template if isinstance(template, str) else DEFAULT_TEMPLATE


def _template_messages(messages: Sequence[ChatMessage]) -> list[dict[str, Any]]:
    """OpenAI messages in the shape GLM-4 templates render (metadata, observation)."""
    out: list[dict[str, Any]] = []
    for message in messages:
        role = "observation" if message.role == "tool" else message.role
        if message.content or not message.tool_calls:
            out.append({"role": role, "content": message.content, "metadata": message.metadata})
        for call in message.tool_calls:
            out.append({"role": "assistant", "content": call.arguments, "metadata": call.name})
    return out


class Glm4HfFormat(ChatFormat):
    """tokenizer.json + the checkpoint's chat template, both loaded once per instance."""

    strips_reply_start = True

    name = "glm4-hf"

    def __init__(self, folder: str | os.PathLike[str]) -> None:
        path = Path(folder)
        self._tokenizer = Tokenizer.from_file(str(path / "tokenizer.json"))
        added = self._tokenizer.get_added_tokens_decoder()
        self.special_tokens = {token.content: i for i, token in added.items() if token.special}
        self._added_bytes = {i: token.content.encode() for i, token in added.items()}
        self._is_byte_level = isinstance(self._tokenizer.decoder, decoders.ByteLevel)
        self.vocab_size = self._tokenizer.get_vocab_size(with_added_tokens=True)
        self._template_source = read_chat_template(path)
        self._template = _environment().from_string(self._template_source)
        self._prefix = [
            self.special_tokens[n] for n in ("[gMASK]", "<sop>") if n in self.special_tokens
        ]
        self.stop_token_ids = self._stop_ids(path)

    def _stop_ids(self, folder: Path) -> tuple[int, ...]:
        eos = _read_json(folder / "generation_config.json").get("eos_token_id")
        if eos is None:
            eos = _read_json(folder / "config.json").get("eos_token_id")
        ids = [eos] if isinstance(eos, int) else list(eos or [])
        ids += [self.special_tokens[n] for n in _STOP_NAMES if n in self.special_tokens]
        return tuple(dict.fromkeys(ids))

    def encode(self, text: str, add_special_tokens: bool = True) -> list[int]:
        ids = self._tokenizer.encode(text, add_special_tokens=False).ids
        return self._prefix + ids if add_special_tokens else ids

    def encode_pieces(self, text: str) -> list[str]:
        ids = self.encode(text, add_special_tokens=False)
        return [self._tokenizer.decode([i], skip_special_tokens=False) for i in ids]

    def decode(self, ids: Sequence[int], skip_special_tokens: bool = True) -> str:
        return self._tokenizer.decode(list(ids), skip_special_tokens=skip_special_tokens)

    def new_decoder(self, skip_special_tokens: bool = True) -> IncrementalDecoder:
        return WindowDecoder(lambda ids: self._tokenizer.decode(ids, skip_special_tokens))

    def token_bytes(self, token_id: int) -> bytes:
        """From the piece, as `decode` would read it before its lossy UTF-8 step: byte-level
        BPE (every GLM-4 -hf tokenizer.json) maps each character to one byte, byte-fallback
        pieces `<0xE4>` are their byte, added tokens their content."""
        if token_id in self._added_bytes:
            return self._added_bytes[token_id]
        piece = self._tokenizer.id_to_token(token_id)
        if piece is None:
            return b""
        if self._is_byte_level and all(char in _BYTE_LEVEL_BYTES for char in piece):
            return bytes(_BYTE_LEVEL_BYTES[char] for char in piece)
        match = _BYTE_FALLBACK_PIECE.fullmatch(piece)
        if match:
            return bytes([int(match.group(1), 16)])
        return super().token_bytes(token_id)

    def render(
        self, messages: Sequence[ChatMessage], tools: Sequence[dict[str, Any]] | None = None
    ) -> str:
        """The prompt text of the chat template, as transformers' apply_chat_template makes it."""
        rendered_messages = _template_messages(messages)
        if tools and "item['tools']" in self._template_source:
            # glm-4-9b-chat's own template reads tools from a message, not from `tools`.
            rendered_messages.insert(0, {"role": "system", "content": "", "tools": list(tools)})
        return self._template.render(
            messages=rendered_messages,
            tools=list(tools) if tools else None,
            add_generation_prompt=True,
        )

    def chat_prompt(
        self, messages: Sequence[ChatMessage], tools: Sequence[dict[str, Any]] | None = None
    ) -> list[int]:
        try:
            text = self.render(messages, tools)
        except TemplateError as error:  # raise_exception() and template bugs: a bad request
            raise ValueError(f"{self.name} chat template: {error}") from error
        return self._tokenizer.encode(text, add_special_tokens=False).ids

    def legacy_prompt(self, query: str, history: Sequence[tuple[str, str]]) -> list[int]:
        return self.chat_prompt(history_to_messages(query, history))

    def parse_reply(self, text: str, tools_given: bool) -> ParsedReply:
        return parse_glm4(text, tools_given)


def write_tokenizer_json(
    tokenizer_model_path: str | os.PathLike[str], out_dir: str | os.PathLike[str]
) -> Path:
    """Write `out_dir/tokenizer.json` from a GLM-4 tiktoken `tokenizer.model`; return its path.

    The file already is tiktoken's `base64 rank` format, so transformers' TikTokenConverter
    reads it directly (what `convert_tiktoken_to_fast` does after dumping a copy with
    blobfile). transformers is a test/bench dependency: imported here only.
    """
    from transformers.convert_slow_tokenizer import TikTokenConverter

    from glm_api.formats.glm4 import GLM4_PATTERN, GLM4_SPECIAL_NAMES

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    converter = TikTokenConverter(
        vocab_file=str(tokenizer_model_path),
        pattern=GLM4_PATTERN,
        extra_special_tokens=list(GLM4_SPECIAL_NAMES),
    )
    converter.converted().save(str(out / "tokenizer.json"))
    return out / "tokenizer.json"
