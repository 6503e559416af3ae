"""ChatGLM3-6B: role tokens, `{metadata}\\n` headers, and tool calls as `tool_call(...)` code.

Reproduces THUDM/chatglm3-6b's `build_chat_input` / `build_single_message` and its
openai_api demo's handling of tools (indented JSON in the system message), past calls and
`observation` results. The tokenizer itself is ChatGLM2's (see chatglm2.py).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

from glm_api.formats.base import ChatMessage, ParsedReply
from glm_api.formats.chatglm import history_to_messages
from glm_api.formats.chatglm2 import SentencePieceGLM
from glm_api.formats.tools import chatglm3_call_text, chatglm3_system_text, parse_chatglm3

_SPECIAL_NAMES = (
    "[MASK]",
    "[gMASK]",
    "[sMASK]",
    "sop",
    "eop",
    "<|system|>",
    "<|user|>",
    "<|assistant|>",
    "<|observation|>",
)
_ROLES = {"system": "system", "user": "user", "assistant": "assistant"}
_ROLES.update({"tool": "observation", "observation": "observation"})


class ChatGLM3Format(SentencePieceGLM):
    """ChatGLM3-6B: `[gMASK] sop`, then `<|role|>` + encode(`{metadata}\\n`) + encode(content)."""

    strips_reply_start = True

    name = "chatglm3"

    def __init__(self, folder: str | os.PathLike[str]) -> None:
        super().__init__(folder, _SPECIAL_NAMES)
        tokens = self.special_tokens
        self.stop_token_ids = (tokens["</s>"], tokens["<|user|>"], tokens["<|observation|>"])

    def _message(self, role: str, metadata: str, content: str) -> list[int]:
        if role not in _ROLES:
            raise ValueError(f"{self.name}: unknown message role {role!r}")
        header = [self.special_tokens[f"<|{_ROLES[role]}|>"]]
        return header + self.encode(f"{metadata}\n", False) + self.encode(content, False)

    def chat_prompt(
        self, messages: Sequence[ChatMessage], tools: Sequence[dict[str, Any]] | None = None
    ) -> list[int]:
        ids = list(self._prefix)
        rest = list(messages)
        if tools:
            # The demo's tool system message; the caller's own system text, if first, leads it.
            system = rest.pop(0).content if rest and rest[0].role == "system" else None
            ids += self._message("system", "", chatglm3_system_text(system, tools))
        for message in rest:
            if message.role == "assistant" and message.tool_calls:
                if message.content:
                    ids += self._message("assistant", message.metadata, message.content)
                for call in message.tool_calls:
                    ids += self._message("assistant", call.name, chatglm3_call_text(call))
                continue
            ids += self._message(message.role, message.metadata, message.content)
        return ids + [self.special_tokens["<|assistant|>"]]

    def legacy_prompt(self, query: str, history: Sequence[tuple[str, str]]) -> list[int]:
        return self.chat_prompt(history_to_messages(query, history))

    def parse_reply(self, text: str, tools_given: bool) -> ParsedReply:
        return parse_chatglm3(text, tools_given)
