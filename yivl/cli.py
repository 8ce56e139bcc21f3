"""Glue shared by the entry points: one-line user errors, exit status 2 (130 for Ctrl-C)."""

from __future__ import annotations

import sys
from collections.abc import Callable
from typing import TypeVar

from yivl.errors import Interrupted, YivlError

T = TypeVar("T")


def fail(message: str, code: int = 2) -> None:
    """Print ``error: message`` on one line to stderr and exit with ``code``."""
    print(f"error: {message}", file=sys.stderr, flush=True)
    raise SystemExit(code)


def run_reporting_errors(fn: Callable[[], T]) -> T:
    """Run ``fn``; turn a :class:`YivlError` into one line on stderr and exit status 2, Ctrl-C into 130."""
    try:
        return fn()
    except YivlError as exc:
        fail(str(exc).splitlines()[0] if str(exc) else type(exc).__name__)
    except Interrupted as exc:
        print(f"\n{exc}", file=sys.stderr, flush=True)
        raise SystemExit(130) from None
    except KeyboardInterrupt:
        print("\ninterrupted", file=sys.stderr)
        raise SystemExit(130) from None
    raise AssertionError("unreachable")
