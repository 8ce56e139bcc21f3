"""The evaluation task types by name: ``tasks=[TYPE:PATH]``, ``task_options.<type>`` and
``val_generation.type`` all look a type up here, and the runner, the summary and the table call it.

A type is one module in ``yivl/evaluation/task_types/`` (a :class:`TaskType` instance named ``TYPE``),
its options' defaults in ``configs/task_options/<name>.yaml``, and one line in ``BUILT_IN`` below.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from yivl.errors import YivlError
from yivl.evaluation.items import Item
from yivl.evaluation.sources import RawRecord
from yivl.evaluation.task_types import caption, loss, mcq, mme, vqa, yesno
from yivl.evaluation.task_types.base import TaskType

BUILT_IN = (loss.TYPE, vqa.TYPE, mcq.TYPE, yesno.TYPE, mme.TYPE, caption.TYPE)
"""The built-in types, in the order messages and docs list them."""
TYPES: dict[str, TaskType] = {}
"""Canonical name -> type, in registration order."""


def register(kind: TaskType) -> TaskType:
    """Add ``kind`` under its name and aliases; a name already taken is an error."""
    taken = [n for n in (kind.name, *kind.aliases) if n in type_names()]
    if taken:
        raise ValueError(f"task type name(s) {', '.join(taken)} already registered")
    TYPES[kind.name] = kind
    return kind


def type_names() -> tuple[str, ...]:
    """Every name a task entry may use: each type followed by its aliases."""
    return tuple(name for kind in TYPES.values() for name in (kind.name, *kind.aliases))


def generation_type_names() -> tuple[str, ...]:
    """The names of the types that generate text (what ``val_generation.type`` accepts)."""
    return tuple(n for kind in TYPES.values() if kind.generation for n in (kind.name, *kind.aliases))


def get_type(name: str, where: str = "tasks") -> TaskType:
    """The type called ``name`` (or an alias of it); unknown names are a YivlError listing the valid ones."""
    for kind in TYPES.values():
        if name == kind.name or name in kind.aliases:
            return kind
    raise YivlError(f"{where}: unknown task type {name!r}; valid task types: {', '.join(type_names())}")


def build_items(kind: str, records: list[RawRecord], options: Mapping[str, Any]) -> list[Item]:
    """Check every record for the fields type ``kind`` needs and build its item (YivlError on a bad one)."""
    task_type = get_type(kind)
    return [task_type.build_item(record, options) for record in records]


for _kind in BUILT_IN:
    register(_kind)
