"""``--part I/N``: one of N jobs (a SLURM array) converts a disjoint, deterministic slice of the input.

Parts are numbered from 1. Part ``I`` of ``N`` takes the ``I``-th of ``N`` contiguous, near-equal
slices (``convert``: records ``[(I-1)*R//N, I*R//N)``; ``laion``: input shards the same way) and writes
a complete, resumable conversion of it to ``OUT/parts/part-I-of-N/``; then
``python -m data_tools merge --output-dir OUT`` joins the parts into one output (:mod:`data_tools.merge`).
"""

from __future__ import annotations

import argparse
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from yivl.errors import YivlError

PARTS = "parts"
_FOLDER = re.compile(r"part-(\d+)-of-(\d+)")
_SLURM_HINT = (
    "for a SLURM array use --array=1-N with --part $SLURM_ARRAY_TASK_ID/$SLURM_ARRAY_TASK_COUNT, "
    "or --part auto"
)


@dataclass(frozen=True)
class Part:
    """Part ``index`` (1-based) of ``count``."""

    index: int
    count: int

    @property
    def name(self) -> str:
        return f"part-{self.index}-of-{self.count}"

    def slice(self, total: int) -> tuple[int, int]:
        """``[start, end)`` of this part among ``total`` items; the N slices tile ``[0, total)``."""
        return (self.index - 1) * total // self.count, self.index * total // self.count

    def params(self) -> dict:
        return {"index": self.index, "count": self.count}


def add_part_arg(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--part",
        metavar="I/N",
        default=None,
        help="convert only part I of N (numbered from 1) into OUT/parts/; `auto` reads the SLURM array "
        "variables; join the parts with `python -m data_tools merge --output-dir OUT` (docs/data.md)",
    )


def parse_part(text: str, env: Mapping[str, str] | None = None) -> Part:
    """``"2/8"`` -> ``Part(2, 8)``; ``"auto"`` -> the position of this task in its SLURM array."""
    if text == "auto":
        return _slurm_part(os.environ if env is None else env)
    m = re.fullmatch(r"\s*(-?\d+)\s*/\s*(-?\d+)\s*", text)
    if not m:
        raise YivlError(f"--part {text}: expected I/N with parts numbered from 1 (e.g. 2/8), or auto")
    index, count = int(m.group(1)), int(m.group(2))
    if count < 1:
        raise YivlError(f"--part {text}: the number of parts must be at least 1; pass --part I/N with N >= 1")
    if not 1 <= index <= count:
        raise YivlError(f"--part {text}: parts are numbered 1 to {count}; {_SLURM_HINT}")
    return Part(index, count)


def _slurm_part(env: Mapping[str, str]) -> Part:
    names = ("SLURM_ARRAY_TASK_ID", "SLURM_ARRAY_TASK_MIN", "SLURM_ARRAY_TASK_MAX", "SLURM_ARRAY_TASK_COUNT")
    missing = [n for n in names if not env.get(n, "").strip().isdigit()]
    if missing:
        raise YivlError(
            f"--part auto needs a SLURM array job ({', '.join(missing)} not set); "
            "submit with sbatch --array=1-N or pass --part I/N"
        )
    task, low, high, count = (int(env[n]) for n in names)
    if high - low + 1 != count:
        raise YivlError(
            f"--part auto: the SLURM array {low}-{high} has {count} tasks, not one per index; "
            "submit with a contiguous --array=1-N (no step, no list) or pass --part I/N"
        )
    return Part(task - low + 1, count)


def part_folders(out_dir: Path) -> dict[Part, Path]:
    """The part folders under ``OUT/parts``, by part."""
    root = out_dir / PARTS
    found = {}
    for path in sorted(root.iterdir()) if root.is_dir() else []:
        m = _FOLDER.fullmatch(path.name)
        if m and path.is_dir():
            found[Part(int(m.group(1)), int(m.group(2)))] = path
    return found


def part_output(out_dir: Path, part: Part) -> Path:
    """``OUT/parts/part-I-of-N``, after checking ``OUT`` holds parts of this same split (or nothing)."""
    if out_dir.exists() and any(out_dir.iterdir()) and not (out_dir / PARTS).is_dir():
        raise YivlError(
            f"{out_dir} is not empty and holds no parts (a one-job conversion or other files); "
            "give the parts an empty --output-dir"
        )
    other = sorted({p.count for p in part_folders(out_dir)} - {part.count})
    if other:
        raise YivlError(
            f"{out_dir} already holds parts of a {other[0]}-part split, this is part "
            f"{part.index}/{part.count}; "
            f"run every part with --part I/{other[0]}, or delete {out_dir / PARTS} to start a split "
            f"into {part.count} parts"
        )
    return out_dir / PARTS / part.name
