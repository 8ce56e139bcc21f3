"""Typed schemas: what each key users edit accepts, checked on the composed config.

A schema maps a dotted key to a :class:`Field`. :func:`check` walks the keys in order and raises one
:class:`~yivl.errors.YivlError` line naming the first bad key, its value and what it accepts. A key the
composed config does not have (e.g. ``finetune.lora.r`` under ``finetune=full``) is not checked.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from yivl.errors import YivlError

_ABSENT = object()


@dataclass(frozen=True)
class Field:
    """One key's type and range. ``message`` (with ``{key}`` and ``{value}``) replaces the default
    text of any refusal, for checks whose wording users and tests already know."""

    kind: str  # int | number | bool | str | choice | strings
    low: float | None = None  # smallest value accepted (inclusive)
    above: float | None = None  # values must be greater than this (exclusive)
    high: float | None = None  # largest value accepted (inclusive)
    choices: tuple[str, ...] = ()
    null: bool = False  # null (None) is accepted
    also: tuple[Any, ...] = ()  # further values accepted as they are, e.g. "auto"
    hint: str = ""  # appended to a type error, e.g. "(or -1 for no limit)"
    message: str = ""
    non_empty: bool = False  # str: the empty string is refused
    pattern: str = ""  # choice: a regular expression also accepted, e.g. cuda:N

    def problem(self, value: Any) -> str | None:
        """Why ``value`` does not fit, or None."""
        if (value is None and self.null) or (value in self.also and type(value) is not bool):
            return None
        if self.kind == "choice":
            fits = str(value) in self.choices or (self.pattern and re.fullmatch(self.pattern, str(value)))
            return None if fits else f"use one of {', '.join(self.choices)}"
        if self.kind == "bool":
            return None if isinstance(value, bool) else "expected true or false"
        if self.kind == "strings":
            fits = isinstance(value, Sequence) and not isinstance(value, str)
            fits = fits and all(isinstance(v, str) and v.strip() for v in value)
            return None if fits else "expected a list of non-empty strings, e.g. [a,b] (or [] for none)"
        if self.kind == "str":
            if not isinstance(value, (str, int, float)) or isinstance(value, bool):
                return "expected a string"
            return "must not be empty" if self.non_empty and not str(value).strip() else None
        return self._number_problem(value)

    def _number_problem(self, value: Any) -> str | None:
        integer = self.kind == "int"
        numeric = isinstance(value, int) or (not integer and isinstance(value, float))
        if not numeric or isinstance(value, bool):
            kind = "an integer" if integer else "a number"
            extra = [repr(a) if isinstance(a, str) else str(a) for a in self.also] + ["null"] * self.null
            hint = self.hint or (f"(or {' or '.join(extra)})" if extra else "")
            return f"expected {kind}" + (f" {hint}" if hint else "")
        word = "an integer " if integer else ""
        if self.low is not None and value < self.low:
            return f"must be {word}>= {self.low:g}" + (f" {self.hint}" if self.hint else "")
        if self.above is not None and value <= self.above:
            return f"must be {word}> {self.above:g}"
        if self.high is not None and value > self.high:
            return f"must be {word}<= {self.high:g}"
        return None


def Int(low: int | None = None, **kw: Any) -> Field:
    return Field("int", low=low, **kw)


def Number(low: float | None = None, **kw: Any) -> Field:
    return Field("number", low=low, **kw)


def Fraction(**kw: Any) -> Field:
    """A number in [0, 1]."""
    return Field("number", low=0, high=1, **kw)


def Choice(*choices: str, **kw: Any) -> Field:
    return Field("choice", choices=choices, **kw)


BOOL = Field("bool")
TEXT = Field("str")
OPTIONAL_TEXT = Field("str", null=True)
STRINGS = Field("strings")  # a list of strings, e.g. [a,b]; [] for none
COUNT = Int(1)  # a size or count of at least one


def lookup(cfg: Any, key: str) -> Any:
    """``cfg``'s value at dotted ``key`` (a Mapping or DictConfig), or ``_ABSENT``."""
    node = cfg
    for part in key.split("."):
        if not isinstance(node, Mapping) or part not in node:
            return _ABSENT
        node = node[part]
    return node


def shown(value: Any) -> str:
    """A value as the user would type it on the command line."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return str(value).lower()
    return str(value)


def check(cfg: Any, schema: Mapping[str, Field], section: str = "") -> None:
    """Raise a one-line YivlError for the first key of ``schema`` (under ``section``) whose value in
    ``cfg`` does not fit: ``key=value: what it accepts``."""
    for key, field in schema.items():
        if section and not key.startswith(f"{section}."):
            continue
        value = lookup(cfg, key)
        if value is _ABSENT:
            continue
        problem = field.problem(value)
        if problem is None:
            continue
        if field.message:
            raise YivlError(field.message.format(key=key, value=value, shown=shown(value)))
        joiner = ": " if problem.startswith(("expected", "use one")) else " "
        raise YivlError(f"{key}={shown(value)}{joiner}{problem}")
