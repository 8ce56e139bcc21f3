"""Refuse a conversation far too long for the context before the whole of it is tokenized.

A 29 MB message tokenizes into millions of ids (about a gigabyte in flight) only to be refused for its
length. Texts longer than a few characters per context token are counted window by window instead, and
counting stops as soon as the count is past twice the context: a window boundary shifts a count by a
token or two, never by half, so what is refused here could never have fit.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Protocol

from yivl.serving.api_errors import ApiError, bad_request
from yivl.serving.openai_format import Conversation

WINDOW_CHARS = 1 << 16
CHARS_PER_TOKEN_CHECKED = 4
"""Texts under this many characters per context token are left to the exact count."""


class Encoder(Protocol):
    def encode(self, text: str) -> list[int]: ...


class EngineLike(Protocol):
    tokenizer: Encoder
    context_length: int


def check_text_fits(engine: EngineLike, conversation: Conversation) -> None:
    """HTTP 400 ``context_length_exceeded`` when the conversation's text alone is over twice the context."""
    texts = [conversation.system, *(turn.text for turn in conversation.turns)]
    limit = engine.context_length
    if sum(len(t) for t in texts) <= limit * CHARS_PER_TOKEN_CHECKED:
        return
    counted = 0
    for window in _windows(texts):
        counted += len(engine.tokenizer.encode(window))
        if counted > 2 * limit:
            raise too_long(f"over {2 * limit}", limit)


def too_long(tokens: str, context: int) -> ApiError:
    """The error for a prompt of ``tokens`` tokens against a ``context``-token model."""
    return bad_request(
        f"the conversation is {tokens} tokens (image features included) but the model's context is "
        f"{context}; shorten it",
        param="messages",
        code="context_length_exceeded",
    )


def _windows(texts: list[str]) -> Iterator[str]:
    for text in texts:
        for start in range(0, len(text), WINDOW_CHARS):
            yield text[start : start + WINDOW_CHARS]
