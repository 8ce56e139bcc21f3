"""Records as users bring them (Yi-VL, LLaVA, ShareGPT4V) -> Yi-VL's canonical record, repairs counted.

LLaVA's preprocessing, which the public files were written for, is the reference: a first turn that is
not from the human is dropped, and in a record with an image, the image token is removed from the
turn, the text stripped, and the token put in front followed by a newline (``<image>\\nquestion``).
Every accepted image token (``image_tokens``: Yi-VL's ``<image_placeholder>`` and LLaVA's ``<image>`` by
default) becomes ``<image_placeholder>``, Yi-VL's own convention. Other keys (``id`` of any type,
``model``, ...) pass through untouched. What cannot be normalised is left for :mod:`yivl.data.checks`
to reject with a reason.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from yivl.constants import IMAGE_PLACEHOLDER
from yivl.data.chat import ASSISTANT, HUMAN, normalize_role
from yivl.errors import YivlError

DEFAULT_IMAGE_TOKENS = (IMAGE_PLACEHOLDER, "<image>")


@dataclass(frozen=True)
class Normalized:
    """The canonical record and the names of the repairs made to it (see ``reasons.REPAIRS``)."""

    record: dict
    repairs: tuple[str, ...] = ()


def image_tokens(tokens: Sequence[str] | None, option: str = "image_tokens") -> tuple[str, ...]:
    """The accepted image tokens, ``<image_placeholder>`` always first; YivlError for a bad list."""
    if tokens is None:
        return DEFAULT_IMAGE_TOKENS
    if isinstance(tokens, str) or not all(isinstance(t, str) and t.strip() for t in tokens):
        raise YivlError(
            f"{option} must be a list of non-empty strings, e.g. ['<image_placeholder>', '<image>']"
        )
    return tuple(dict.fromkeys([IMAGE_PLACEHOLDER, *(t.strip() for t in tokens)]))


def _role(turn: object) -> str | None:
    if not isinstance(turn, dict):
        return None
    try:
        return normalize_role(turn.get("from"), "turn")
    except YivlError:
        return None


def _has_image(record: dict) -> bool:
    image = record.get("image")
    return bool(image) and isinstance(image, str | list)


def normalize_record(record: dict, tokens: Sequence[str] = DEFAULT_IMAGE_TOKENS) -> Normalized:
    """``record`` in Yi-VL's canonical form (a new dict; the input is not changed) and its repairs."""
    conversations = record.get("conversations")
    if not isinstance(conversations, list) or not conversations:
        return Normalized(record)
    turns = [dict(t) if isinstance(t, dict) else t for t in conversations]
    repairs: list[str] = []
    if len(turns) > 1 and _role(turns[0]) == ASSISTANT:
        turns = turns[1:]  # LLaVA: `if roles[source[0]["from"]] != conv.roles[0]: source = source[1:]`
        repairs.append("assistant_first_dropped")
    if _has_image(record):
        repairs += _place_image_token(turns, tokens)
    return Normalized({**record, "conversations": turns}, tuple(repairs))


def _place_image_token(turns: list, tokens: Sequence[str]) -> list[str]:
    """Rename every image token to the placeholder; put the one of a human turn first in the first human
    turn. Several human turns holding one are left for the checks to reject (``placeholder_count``)."""
    holders = []
    for i, turn in enumerate(turns):
        if not isinstance(turn, dict) or not isinstance(turn.get("value"), str):
            return []
        value = turn["value"]
        for token in sorted(tokens, key=len, reverse=True):  # a longer token may contain a shorter one
            value = value.replace(token, IMAGE_PLACEHOLDER)
        turn["value"] = value
        if IMAGE_PLACEHOLDER in value and _role(turn) == HUMAN:
            holders.append(i)
    first = next((i for i, t in enumerate(turns) if _role(t) == HUMAN), None)
    if len(holders) != 1 or first is None:
        return []
    repairs = []
    held = turns[holders[0]]["value"]
    if held.count(IMAGE_PLACEHOLDER) > 1:
        repairs.append("placeholder_deduplicated")
    turns[holders[0]]["value"] = held.replace(IMAGE_PLACEHOLDER, "").strip()
    if holders[0] != first:
        repairs.append("placeholder_moved")
    turns[first]["value"] = (IMAGE_PLACEHOLDER + "\n" + turns[first]["value"]).strip()
    return repairs
