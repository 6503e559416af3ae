"""Engine `TokenLogprob`s in the two OpenAI shapes: chat's list and completions' columns."""

from __future__ import annotations

from collections.abc import Sequence

from glm_api.engine.request import TokenLogprob
from glm_api.formats.base import ChatFormat
from glm_api.protocol.openai import ChatChoiceLogprobs, ChatTokenLogprob, TopLogprob
from glm_api.protocol.openai_misc import CompletionLogprobs


def _top(fmt: ChatFormat, token_id: int, logprob: float) -> TopLogprob:
    piece = fmt.id_to_piece(token_id)
    return TopLogprob(token=piece, logprob=logprob, bytes=list(piece.encode("utf-8")))


def chat_logprobs(fmt: ChatFormat, entries: Sequence[TokenLogprob]) -> ChatChoiceLogprobs:
    content = []
    for entry in entries:
        chosen = _top(fmt, entry.token_id, entry.logprob)
        tops = [_top(fmt, tid, lp) for tid, lp in entry.top]
        content.append(ChatTokenLogprob(**chosen.model_dump(), top_logprobs=tops))
    return ChatChoiceLogprobs(content=content)


def completion_logprobs(
    fmt: ChatFormat, entries: Sequence[TokenLogprob], text_offset: int
) -> CompletionLogprobs:
    """`text_offset` is where the first of these tokens starts in the choice's text."""
    out = CompletionLogprobs()
    for entry in entries:
        piece = fmt.id_to_piece(entry.token_id)
        out.tokens.append(piece)
        out.token_logprobs.append(entry.logprob)
        out.top_logprobs.append({fmt.id_to_piece(tid): lp for tid, lp in entry.top})
        out.text_offset.append(text_offset)
        text_offset += len(piece)
    return out
