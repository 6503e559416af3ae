"""Streaming text of one request: incremental detokenisation plus stop strings.

A stop string may be split across tokens, so text that could be the start of a stop string
is held back until the next ids decide it. When a stop string appears, the text before it
is the last output and the stop string itself is never sent. Work per step is proportional
to the new text plus the held-back tail (shorter than the longest stop string).

Which ids stop a request, and max_tokens, are the scheduler's; this module sees only text.
"""

from __future__ import annotations

from collections.abc import Sequence

from glm_api.formats.base import IncrementalDecoder


class TextStream:
    def __init__(self, decoder: IncrementalDecoder, stop: Sequence[str] = ()) -> None:
        self._decoder = decoder
        self._stop = [s for s in stop if s]
        self._pending = ""  # decoded text not yet sent: maybe the start of a stop string

    def step(self, new_ids: Sequence[int], check_stop: bool = True) -> tuple[str, str | None]:
        """Text that became final with `new_ids`, and the stop string found (then it ends)."""
        text = self._pending + self._decoder.step(new_ids)
        if not check_stop or not self._stop:
            self._pending = ""
            return text, None
        return self._split(text, is_last=False)

    def finish(self, check_stop: bool = True) -> tuple[str, str | None]:
        """The rest of the text at the end of the request (held-back text and decoder tail)."""
        text = self._pending + self._decoder.flush()
        self._pending = ""
        if not check_stop or not self._stop:
            return text, None
        return self._split(text, is_last=True)

    def _split(self, text: str, is_last: bool) -> tuple[str, str | None]:
        found_at, found = len(text), None
        for stop in self._stop:
            at = text.find(stop)
            if at != -1 and at < found_at:
                found_at, found = at, stop
        if found is not None:
            self._pending = ""
            return text[:found_at], found
        hold = 0 if is_last else self._held_back(text)
        self._pending = text[len(text) - hold :] if hold else ""
        return text[: len(text) - hold], None

    def _held_back(self, text: str) -> int:
        """Length of the longest tail of `text` that begins some stop string."""
        longest = 0
        for stop in self._stop:
            for size in range(min(len(stop) - 1, len(text)), longest, -1):
                if text.endswith(stop[:size]):
                    longest = size
                    break
        return longest
