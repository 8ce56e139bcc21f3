"""``--help`` of every tool answers without importing torch & co.

Importing torch, transformers or Lightning takes seconds; a tool's help (and its argument errors) must
not wait for them. Read from ``python -X importtime``, which names every module a run imports, so the
test says which heavy package came in, not how long it took.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
HEAVY = {"torch", "transformers", "lightning", "webdataset", "peft", "gradio", "fastapi", "deepspeed"}

TOOLS = [
    ["train.py", "--help"],
    ["evaluate.py", "--help"],
    ["infer.py", "--help"],
    ["-m", "data_tools", "--help"],
    ["-m", "yivl.checkpoint.export", "--help"],
    ["-m", "yivl.checkpoint.tiny", "--help"],
    *(
        ["-m", "data_tools", command, "--help"]
        for command in ("convert", "laion", "merge", "validate", "stats", "inspect")
    ),
]


def imported_modules(args: list[str]) -> set[str]:
    """Top-level packages a ``python ARGS`` run imports (it must exit 0)."""
    proc = subprocess.run(
        [sys.executable, "-X", "importtime", *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    names = set()
    for line in proc.stderr.splitlines():
        if line.startswith("import time:") and line.count("|") == 2:
            names.add(line.rsplit("|", 1)[1].strip().split(".")[0])
    assert "argparse" in names or "hydra" in names, "importtime printed nothing we could read"
    return names


@pytest.mark.parametrize("args", TOOLS, ids=lambda a: " ".join(a))
def test_help_imports_no_heavy_package(args: list[str]) -> None:
    assert imported_modules(args) & HEAVY == set()
