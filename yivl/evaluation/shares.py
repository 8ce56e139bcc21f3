"""The records of a task run by several processes: each rank's partial file, its marker when its share
is done, and rank 0's merge into the one ``samples_<task>.jsonl`` a single process writes.

Each rank appends to ``ranks/samples_<task>.rank<r>.jsonl``. A resume (with any number of processes)
reads the merged file and every partial file, so what any earlier rank finished is never computed
again. The merged file lists the records in the order a fresh single-process run writes them: the
skipped samples in file order, then the planned batches in order.
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from yivl.errors import YivlError
from yivl.evaluation.items import Item
from yivl.evaluation.ranks import RESUME, World, ranks_dir
from yivl.evaluation.records import load_records, samples_path, write_text
from yivl.evaluation.runner import TaskOutcome


def partial_path(out_dir: Path, task: str, rank: int) -> Path:
    return ranks_dir(out_dir) / f"samples_{task}.rank{rank}.jsonl"


def partial_paths(out_dir: Path, task: str) -> list[Path]:
    """Every rank's partial file of ``task`` (from this start or an earlier one, any world size)."""
    return _rank_files(out_dir, rf"samples_{re.escape(task)}\.rank\d+\.jsonl")


def _rank_files(out_dir: Path, pattern: str) -> list[Path]:
    folder = ranks_dir(out_dir)
    if not folder.is_dir():
        return []
    return sorted(p for p in folder.iterdir() if re.fullmatch(pattern, p.name))


def load_done(out_dir: Path, task: str, own: Path) -> dict[str, dict[str, Any]]:
    """The task's finished records by id: the merged file and every partial file. Only ``own`` (the
    file this process appends to) has a torn last line cut off; the others may still be written."""
    done: dict[str, dict[str, Any]] = {}
    for path in [samples_path(out_dir, task), *partial_paths(out_dir, task)]:
        done |= load_records(path, repair=path == own)
    return done


def _marker(out_dir: Path, task: str, rank: int) -> Path:
    return ranks_dir(out_dir) / f"{task}.rank{rank}.done.json"


def write_marker(out_dir: Path, task: str, world: World, outcome: TaskOutcome) -> None:
    """Tell rank 0 this rank's share of ``task`` is written (and what it computed)."""
    stats = {"launch": world.launch, "computed": outcome.computed, "gen_tokens": outcome.gen_tokens}
    write_text(_marker(out_dir, task, world.rank), json.dumps(stats | {"wall_s": outcome.wall_s}) + "\n")


def read_markers(out_dir: Path, task: str, world: World) -> dict[int, dict[str, Any]]:
    """The markers of this start's ranks that have finished ``task``."""
    found = {}
    for rank in range(world.size):
        try:
            stats = json.loads(_marker(out_dir, task, rank).read_text(encoding="utf-8"))
        except (OSError, ValueError):
            continue
        if stats["launch"] == world.launch:
            found[rank] = stats
    return found


def pending_ranks(out_dir: Path, task: str, world: World) -> list[int]:
    """The ranks of this start that have not finished ``task`` yet."""
    done = read_markers(out_dir, task, world)
    return [rank for rank in range(world.size) if rank not in done]


def add_rank_stats(outcome: TaskOutcome, markers: dict[int, dict[str, Any]]) -> None:
    """Count what every rank computed (``wall_s``: the slowest rank's)."""
    outcome.computed = sum(int(m["computed"]) for m in markers.values())
    outcome.gen_tokens = sum(int(m["gen_tokens"]) for m in markers.values())
    outcome.wall_s = max(float(m["wall_s"]) for m in markers.values())


def merge(out_dir: Path, task: str, items: Sequence[Item], order: Sequence[int]) -> list[dict[str, Any]]:
    """Write ``samples_<task>.jsonl`` from every rank's records in ``order`` (item indices), remove the
    partial files and markers; returns the records in file order (dataset order)."""
    done = load_done(out_dir, task, samples_path(out_dir, task))
    missing = [item.id for item in items if item.id not in done]
    if missing:
        raise YivlError(
            f"task {task}: {len(missing)} sample(s) have no record after merging the ranks (first: "
            f"{missing[0]}); {RESUME}"
        )
    lines = [json.dumps(done[items[i].id], ensure_ascii=False, default=str) + "\n" for i in order]
    write_text(samples_path(out_dir, task), "".join(lines))
    for path in [
        *partial_paths(out_dir, task),
        *_rank_files(out_dir, rf"{re.escape(task)}\.rank\d+\.done\.json"),
    ]:
        path.unlink()
    return [done[item.id] for item in items]
