"""Duplicate record ids: counted and reported by ``validate`` and ``convert``; the records are still used.

LLaVA-style ids are strings (``"000000033471"``) or integers, mixed in one file (mix665k has both). Two
ids are the same when their text is: ``1`` and ``"1"`` are one id, because every tool that keys answers
or files by id (LLaVA's own scripts, answer files, image names) writes them as that text. Each id costs an
8-byte blake2b digest in a set (about 70 bytes a record with the set's overhead), never the record.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator
from hashlib import blake2b
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # data_tools.report imports this module; process imports report
    from data_tools.process import Item

EXAMPLES = 5


def id_text(value: object) -> str | None:
    """The text an id is compared by: a string as it is, anything else as JSON (``1`` -> ``"1"``)."""
    if value is None:
        return None
    return value if isinstance(value, str) else json.dumps(value, ensure_ascii=False, sort_keys=True)


class DuplicateIds:
    """Counts records whose ``id`` an earlier record already had; keeps the first few such ids."""

    def __init__(self) -> None:
        self._seen: set[int] = set()
        self.count = 0
        self.examples: list = []

    def add(self, value: object) -> None:
        text = id_text(value)
        if text is None:
            return
        digest = blake2b(text.encode("utf-8", "surrogatepass"), digest_size=8).digest()
        number = int.from_bytes(digest, "little")
        if number not in self._seen:
            self._seen.add(number)
            return
        self.count += 1
        if len(self.examples) < EXAMPLES and text not in map(id_text, self.examples):
            self.examples.append(value)

    def add_raw(self, raw: bytes) -> None:
        """Count the id of one record's JSON bytes; a record that does not parse has no id."""
        try:
            record = json.loads(raw)
        except (ValueError, UnicodeDecodeError):
            return
        if isinstance(record, dict):
            self.add(record.get("id"))

    def summary(self) -> dict:
        """``{"count": N, "examples": [first few repeated ids]}`` for the manifest."""
        return {"count": self.count, "examples": list(self.examples)}


def counting_ids(items: Iterable[Item], ids: DuplicateIds) -> Iterator[Item]:
    """``items`` unchanged, with each record's id counted on the way."""
    for item in items:
        if item.raw:
            ids.add_raw(item.raw)
        yield item


def describe(summary: dict) -> str:
    """``"2 (e.g. 17, 'a')"`` for a summary line."""
    if not summary["count"]:
        return "0"
    return f"{summary['count']} (e.g. {', '.join(map(repr, summary['examples']))})"
