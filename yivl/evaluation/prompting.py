"""An item's model inputs (``Prepared``), in the training chat format (``yivl.data.chat``).

Generation prompts are rendered like ``infer.py`` renders them (``render_question``); each task type's
``prepare`` fills the rest (``yivl.evaluation.task_types``). An item that does not fit the model's
context is not an error: its ``Prepared.skip`` says why, and the runner records it as skipped.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from yivl.data.chat import Turn, render_prompt, with_image_placeholder

Sequence_ = tuple[list[int], list[int]]
TOO_LONG = "too_long"
"""The skip reason of an item that does not fit the context (the data pipeline's code for the same)."""


@dataclass
class Prepared:
    """An item's model inputs: generation prompt (text + ids), scored sequences (ids + labels), length.

    ``length`` is the longest sequence the model sees for this item, image features included; it
    orders the batches. ``skip``: the fields of the item's skipped record (reason, length, context)
    when it does not fit the context, else None.
    """

    prompt: str | None = None
    prompt_ids: list[int] | None = None
    cloze_prompt: str | None = None
    sequences: list[Sequence_] | None = None
    length: int = 0
    skip: dict[str, Any] | None = None


def render_question(question: str, has_image: bool) -> str:
    """The inference prompt of a single human turn (placeholder first when there is an image)."""
    return render_prompt(with_image_placeholder([Turn("human", question)], has_image))


def too_long(length: int, context: int, generates: bool) -> dict[str, Any] | None:
    """The skip fields of an item of ``length`` tokens, or None when it fits ``context``.

    Generation needs room for at least one new token, so its prompt must be shorter than the context.
    """
    limit = context - 1 if generates else context
    if length <= limit:
        return None
    room = " with room for one generated token" if generates else ""
    return {
        "skipped": TOO_LONG,
        "skip_detail": f"{length} tokens (image features included) do not fit the model's context of "
        f"{context}{room}",
        "length": length,
        "context": context,
    }
