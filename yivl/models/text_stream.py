"""Stop strings and streaming: turn a growing decoded continuation into the answer and its deltas."""

from __future__ import annotations

from collections.abc import Callable, Sequence


def find_stop(text: str, stops: Sequence[str]) -> int | None:
    """Index of the earliest occurrence of any stop string in ``text``, or None."""
    first = None
    for stop in stops:  # a plain loop: this runs for every row on every decode step
        at = text.find(stop) if stop else -1
        if at >= 0 and (first is None or at < first):
            first = at
    return first


def partial_stop_length(text: str, stops: Sequence[str]) -> int:
    """Length of the longest suffix of ``text`` that is a proper prefix of a stop string ("#", "##")."""
    best = 0
    for stop in stops:
        for n in range(min(len(stop) - 1, len(text)), best, -1):
            if text.endswith(stop[:n]):
                best = n
                break
    return best


def visible_text(text: str, stops: Sequence[str], final: bool) -> str:
    """The part of ``text`` that is sure to be in the answer.

    The answer is the text before the first stop string, whitespace stripped. While generating
    (``final`` False) a trailing partial stop string, trailing whitespace and an unfinished UTF-8
    character (U+FFFD from byte tokens) are held back, since the next tokens may remove them.
    """
    cut = find_stop(text, stops)
    if cut is not None:
        return text[:cut].strip()
    return text.strip() if final else _sure_part(text, stops)


def _sure_part(text: str, stops: Sequence[str]) -> str:
    """``text`` (no stop string in it) without what the next tokens may still remove."""
    text = text[: len(text) - partial_stop_length(text, stops)]
    return text.rstrip("\ufffd").strip()


class TextStream:
    """One sample's continuation: its token ids, the answer once done, and what was already streamed."""

    def __init__(self, index: int, stops: Sequence[str], on_text: Callable[[int, str], None] | None) -> None:
        self.index = index
        self.stops = tuple(stops)
        self.on_text = on_text
        self.ids: list[int] = []
        self.text = ""
        self.emitted = ""
        self.answer: str | None = None

    def update(self, text: str) -> bool:
        """Take the decoded continuation so far; stream what is safe; True once a stop string appeared."""
        self.text = text
        if find_stop(text, self.stops) is not None:
            self.finish()
            return True
        self._emit(_sure_part(text, self.stops))  # visible_text without a second search for the stops
        return False

    def finish(self) -> str:
        """Fix the answer (text before the stop string, stripped) and stream the rest of it."""
        if self.answer is None:
            self.answer = visible_text(self.text, self.stops, final=True)
            self._emit(self.answer)
        return self.answer

    def _emit(self, visible: str) -> None:
        """Send the new tail of ``visible``; wait if the decoder revised text already sent (rare)."""
        if self.on_text is None or not visible.startswith(self.emitted) or visible == self.emitted:
            return
        delta = visible[len(self.emitted) :]
        self.emitted = visible
        self.on_text(self.index, delta)
