"""Glue shared by the entry points: one-line user errors and hints for the original scripts' flags."""

from __future__ import annotations

import sys
from collections.abc import Callable, Mapping, Sequence
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


def reject_legacy_flags(argv: Sequence[str], overrides: Mapping[str, str], script: str) -> None:
    """Exit with a hint when ``argv`` uses a flag of the original 01-ai scripts.

    Hydra would otherwise fail with a generic parse error. ``overrides`` maps e.g. ``--model-path`` to
    ``model_path``.
    """
    for i, arg in enumerate(argv):
        flag, _, inline_value = arg.partition("=")
        if flag not in overrides:
            continue
        value = inline_value or (argv[i + 1] if i + 1 < len(argv) else "VALUE")
        fail(
            f"{script} takes Hydra overrides, not flags: write {overrides[flag]}={value} "
            f"instead of {flag} {value}"
        )
