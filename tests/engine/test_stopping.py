"""Stop strings split across tokens, held-back text, and the decoder tail."""

from __future__ import annotations

from collections.abc import Sequence

from engine_fakes import PIECES, PieceDecoder

from glm_api.engine.stopping import TextStream
from glm_api.formats.base import IncrementalDecoder


def ids(*pieces: str) -> list[int]:
    return [PIECES.index(p) for p in pieces]


def run(stream: TextStream, pieces: list[str]) -> tuple[list[str], str | None]:
    deltas: list[str] = []
    for token in ids(*pieces):
        text, found = stream.step([token])
        deltas.append(text)
        if found is not None:
            return deltas, found
    text, found = stream.finish()
    deltas.append(text)
    return deltas, found


def test_a_stop_string_split_across_tokens_is_held_back_and_cut() -> None:
    deltas, found = run(TextStream(PieceDecoder(True), ["STOP"]), ["hello", "ST", "OP", "!"])
    assert deltas == ["hello", "", ""] and found == "STOP"


def test_held_back_text_is_released_when_it_is_not_a_stop() -> None:
    deltas, found = run(TextStream(PieceDecoder(True), ["STOP"]), ["a", "ST", "!", "ST"])
    assert deltas == ["a", "", "ST!", "", "ST"] and found is None


def test_the_earliest_stop_string_wins_and_text_before_it_is_sent() -> None:
    stream = TextStream(PieceDecoder(True), ["cd", "b"])
    text, found = stream.step(ids("x", "ab", "cd"))
    assert (text, found) == ("xa", "b")


def test_a_stop_string_inside_one_token() -> None:
    deltas, found = run(TextStream(PieceDecoder(True), ["y"]), ["a", "xyz"])
    assert deltas == ["a", "x"] and found == "y"


def test_without_stop_strings_or_checks_everything_flows() -> None:
    assert run(TextStream(PieceDecoder(True)), ["ST", "OP"]) == (["ST", "OP", ""], None)
    stream = TextStream(PieceDecoder(True), ["STOP"])
    assert stream.step(ids("STOP"), check_stop=False) == ("STOP", None)


class TailDecoder(IncrementalDecoder):
    """Holds everything until flush (as a decoder waiting for the rest of a UTF-8 byte)."""

    def __init__(self) -> None:
        self.held = ""

    def step(self, new_ids: Sequence[int]) -> str:
        self.held += "".join(PIECES[i] for i in new_ids)
        return ""

    def flush(self) -> str:
        return self.held


def test_a_stop_string_completed_by_the_decoder_tail_is_found_at_finish() -> None:
    stream = TextStream(TailDecoder(), ["OP"])
    assert stream.step(ids("hello", "ST", "OP")) == ("", None)
    assert stream.finish() == ("helloST", "OP")
