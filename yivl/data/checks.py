"""Structural checks of a conversation record, each failure mapped to one reject reason.

These run before the chat format renders anything, so a bad record gets a specific reason
(``role_unknown``, ``placeholder_in_assistant``...) instead of a generic format error. Rendering and
masking stay in :mod:`yivl.data.chat`; role names are normalised by its ``normalize_role``.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from yivl.constants import IMAGE_PLACEHOLDER
from yivl.data.chat import normalize_role
from yivl.data.formats import DEFAULT_IMAGE_TOKENS
from yivl.data.image_files import resolve_image_path
from yivl.data.reasons import SampleRejected
from yivl.errors import YivlError


def record_image(record: dict, where: str) -> str | None:
    """The record's image path (``image`` as a string or a one-element list), or None for text-only."""
    image: Any = record.get("image")
    if isinstance(image, list):
        if len(image) > 1:
            raise SampleRejected("multiple_images", f"{where}: {len(image)} images")
        image = image[0] if image else None
    if image is None:
        return None
    if not isinstance(image, str):
        raise SampleRejected("value_not_string", f"{where}: `image` is {type(image).__name__}")
    if not image.strip():
        raise SampleRejected("image_missing", f"{where}: `image` is an empty string")
    return image


def record_image_path(record: dict, folder: str | Path, where: str, allow_outside: bool) -> Path | None:
    """The record's image file resolved inside ``folder`` (``image_outside_folder`` otherwise, unless
    ``allow_outside``); None for a text-only record. Nothing is opened."""
    image = record_image(record, where)
    return resolve_image_path(folder, image, where, allow_outside) if image else None


def _turn_roles(conversations: list, where: str) -> list[str]:
    roles = []
    for i, turn in enumerate(conversations):
        if not isinstance(turn, dict):
            raise SampleRejected(
                "value_not_string", f"{where}: turn {i} is {type(turn).__name__}, not an object"
            )
        role, value = turn.get("from"), turn.get("value")
        for name, field in (("from", role), ("value", value)):
            if not isinstance(field, str):
                raise SampleRejected(
                    "value_not_string", f"{where}: turn {i} `{name}` is {type(field).__name__}"
                )
        if not role.strip():
            raise SampleRejected("role_empty", f"{where}: turn {i} has an empty `from`")
        try:
            roles.append(normalize_role(role, f"{where} turn {i}"))
        except YivlError as err:
            raise SampleRejected("role_unknown", str(err)) from None
    return roles


def _check_order(roles: list[str], conversations: list, where: str) -> None:
    for i, role in enumerate(roles):
        expected = "human" if i % 2 == 0 else "assistant"
        if role != expected:
            raise SampleRejected("turn_order", f"{where}: turn {i} is {role}, expected {expected}")
        if role == "assistant" and not conversations[i]["value"].strip():
            raise SampleRejected("reply_empty", f"{where}: turn {i} is an empty reply")
    if roles[-1] != "assistant":
        raise SampleRejected("turn_order", f"{where}: the last turn is {roles[-1]}, not an assistant reply")


def _check_placeholders(
    roles: list[str], conversations: list, has_image: bool, where: str, tokens: Sequence[str]
) -> None:
    counts = [turn["value"].count(IMAGE_PLACEHOLDER) for turn in conversations]
    for i, (role, n) in enumerate(zip(roles, counts, strict=True)):
        if n and role == "assistant":
            raise SampleRejected(
                "placeholder_in_assistant", f"{where}: turn {i} is a reply holding {IMAGE_PLACEHOLDER}"
            )
    total, images = sum(counts), int(has_image)
    if total > images:
        raise SampleRejected(
            "placeholder_count", f"{where}: {total} {IMAGE_PLACEHOLDER} for {images} image(s)"
        )
    if total < images:
        raise SampleRejected(
            "placeholder_missing",
            f"{where}: an image but none of the image tokens {', '.join(tokens)} in a human turn; add the "
            "record's token to image_tokens (data config, task_options.loss) or --image-tokens (data_tools)",
        )


def check_record(record: dict, where: str, tokens: Sequence[str] = DEFAULT_IMAGE_TOKENS) -> str | None:
    """Validate a normalised record's structure (see :mod:`yivl.data.formats`); returns its image path
    (None if text-only). ``tokens`` are the accepted image tokens, named in ``placeholder_missing``.

    Raises :class:`SampleRejected` naming the first problem found.
    """
    conversations = record.get("conversations")
    if not isinstance(conversations, list) or not conversations:
        raise SampleRejected("no_conversations", f"{where}: `conversations` is missing or empty")
    image = record_image(record, where)
    roles = _turn_roles(conversations, where)
    _check_order(roles, conversations, where)
    _check_placeholders(roles, conversations, image is not None, where, tokens)
    return image
