"""Engine `TokenLogprob`s in the two OpenAI shapes: chat's list and completions' columns.

A token is shown by its exact bytes (`ChatFormat.token_bytes`): `bytes` lists them, and its
text is their UTF-8, or `bytes:\\xe4`-style escapes when they hold part of a character (as
OpenAI writes such tokens), so distinct byte ids never share one U+FFFD key. `text_offset`
counts characters of the text the engine sent, found with the format's own incremental
decoder; nothing here decodes a whole sequence per token.
"""

from __future__ import annotations

from collections.abc import Sequence

from glm_api.engine.request import TokenLogprob
from glm_api.formats.base import ChatFormat
from glm_api.protocol.openai import ChatChoiceLogprobs, ChatTokenLogprob, TopLogprob
from glm_api.protocol.openai_misc import CompletionLogprobs


def token_text(data: bytes) -> str:
    """A token's bytes as logprobs name it: their text, or `bytes:\\xe4\\xb8` if not UTF-8."""
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        return "bytes:" + "".join(f"\\x{byte:02x}" for byte in data)


class TextOffsets:
    """Where each token of one choice starts in its text, in characters.

    Runs the format's incremental decoder, the one the engine makes the text with, so a
    dropped special or a byte that only begins a character adds nothing, and the id that
    completes a character starts where that character does. Keep one per choice across
    stream deltas; each id costs one decoder step.
    """

    def __init__(self, fmt: ChatFormat, skip_special_tokens: bool = True, start: int = 0) -> None:
        self._decoder = fmt.new_decoder(skip_special_tokens)
        self.end = start  # the length of the text decoded so far

    def advance(self, token_id: int) -> int:
        """The offset of `token_id`, the next id of the choice; the end moves past its text."""
        offset = self.end
        self.end += len(self._decoder.step([token_id]))
        return offset


def _top(fmt: ChatFormat, token_id: int, logprob: float) -> TopLogprob:
    data = fmt.token_bytes(token_id)
    return TopLogprob(token=token_text(data), logprob=logprob, bytes=list(data))


def _top_dict(fmt: ChatFormat, top: Sequence[tuple[int, float]]) -> dict[str, float]:
    out: dict[str, float] = {}
    for token_id, logprob in top:
        key = token_text(fmt.token_bytes(token_id))
        if key in out:  # another id with the same bytes (sentencepiece's `▁` and `<0x20>`)
            key = f"token_id:{token_id}"  # vLLM's name for a token shown by its id
        out[key] = logprob
    return out


def chat_logprobs(fmt: ChatFormat, entries: Sequence[TokenLogprob]) -> ChatChoiceLogprobs:
    content = []
    for entry in entries:
        chosen = _top(fmt, entry.token_id, entry.logprob)
        tops = [_top(fmt, tid, lp) for tid, lp in entry.top]
        content.append(ChatTokenLogprob(**chosen.model_dump(), top_logprobs=tops))
    return ChatChoiceLogprobs(content=content)


def completion_logprobs(
    fmt: ChatFormat,
    entries: Sequence[TokenLogprob],
    offsets: TextOffsets,
    end: int | None = None,
) -> CompletionLogprobs:
    """The columns of `entries`, the next ids of one choice.

    `offsets` follows the choice's text (one `TextOffsets` per choice, kept across stream
    deltas). `end`, the length of the choice's text once known, caps the offsets of ids
    whose text a stop string cut off.
    """
    out = CompletionLogprobs()
    for entry in entries:
        offset = offsets.advance(entry.token_id)
        out.tokens.append(token_text(fmt.token_bytes(entry.token_id)))
        out.token_logprobs.append(entry.logprob)
        out.top_logprobs.append(_top_dict(fmt, entry.top))
        out.text_offset.append(offset if end is None else min(offset, end))
    return out
