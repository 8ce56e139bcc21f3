"""Evaluation items and the record checks every task type shares (text fields, the question with its
suffix, group labels). Each type builds its items in ``yivl.evaluation.task_types.<type>``; nothing here
needs the model, and prompts are rendered later.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from yivl.constants import IMAGE_PLACEHOLDER
from yivl.data.chat import Turn
from yivl.errors import YivlError
from yivl.evaluation.sources import ImageRef, RawRecord

LLAVA_IMAGE_TOKEN = "<image>"


@dataclass
class Item:
    """One sample to evaluate.

    ``question``: the human message for generation (suffix included, no placeholder). ``target``: the
    normalised gold answer (JSON-able). ``meta``: groups and extras (answer_type, category, pair_id,
    split, choices...). ``turns``: the whole conversation (loss). ``cloze``/``continuations``: the
    likelihood context message and the option continuations (mcq).
    """

    index: int
    id: str
    where: str
    image: ImageRef | None
    question: str | None = None
    target: Any = None
    meta: dict[str, Any] = field(default_factory=dict)
    turns: list[Turn] | None = None
    cloze: str | None = None
    continuations: list[str] | None = None


def base_item(record: RawRecord) -> Item:
    """The item of ``record`` with its identity, image and group labels, before the type's fields."""
    return Item(record.index, record.id, record.where, record.image, meta=_groups(record.data))


def _groups(data: Mapping[str, Any]) -> dict[str, Any]:
    keys = ("answer_type", "question_type", "category", "split", "pair_id")
    return {k: str(data[k]) for k in keys if data.get(k) is not None}


def required_text(record: RawRecord, key: str, task: str) -> str:
    """The record's non-empty string ``key`` (a YivlError naming the record otherwise)."""
    value = record.data.get(key)
    if not isinstance(value, str) or not value.strip():
        raise YivlError(f"{record.where}: a {task} record needs a non-empty string '{key}'")
    return value


def question_text(record: RawRecord, task: str) -> str:
    """The record's question; a LLaVA ``<image>`` token becomes the Yi-VL placeholder."""
    text = required_text(record, "question", task).replace(LLAVA_IMAGE_TOKEN, IMAGE_PLACEHOLDER)
    if IMAGE_PLACEHOLDER in text and record.image is None:
        raise YivlError(f"{record.where}: the question has an image placeholder but the record has no image")
    return text


def with_suffix(text: str, suffix: str | None) -> str:
    """``text`` + ``suffix`` unless it already ends with it."""
    if not suffix or text.endswith(suffix):
        return text
    return text + suffix
