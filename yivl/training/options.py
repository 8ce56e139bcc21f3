"""Config group choices on the command line, checked before Hydra sees them.

Hydra's own message for an unknown option spans a dozen lines (with the config search path); the
house rule is one line naming the thing and the fix.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from pathlib import Path

from yivl.cli import fail

_SWEEP_FUNCTION = re.compile(r"^\w+\(")  # choice(...), range(...), glob(...): leave to Hydra


def group_options(config_dir: Path, group: str) -> list[str] | None:
    """The options of config group ``group`` (a folder of YAML files), or None if it is not a group."""
    folder = config_dir / group
    if not folder.is_dir():
        return None
    return sorted(p.stem for p in folder.glob("*.yaml"))


def unknown_option(argv: Sequence[str], config_dir: Path) -> str | None:
    """The first ``group=option`` argument naming an option that does not exist, as a message."""
    for arg in argv:
        key, sep, value = arg.partition("=")
        key = key.lstrip("+~")
        if not sep or value in ("null", "") or _SWEEP_FUNCTION.match(value) or "." in key:
            continue
        options = group_options(config_dir, key)
        if options is None:
            continue
        for choice in value.split(","):
            if choice not in options:
                return f"unknown {key}={choice}; valid options: {', '.join(options)}"
    return None


def reject_unknown_options(argv: Sequence[str], config_dir: Path) -> None:
    """Exit with one line (status 2) when a config group option on the command line does not exist."""
    message = unknown_option(argv, config_dir)
    if message:
        fail(message)
