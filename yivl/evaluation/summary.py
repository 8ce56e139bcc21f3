"""summary.json, summary.md, the table on stdout and summary.png, from the finished tasks."""

from __future__ import annotations

import datetime as dt
import json
import platform
import subprocess
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from yivl.data.reasons import describe
from yivl.evaluation.metrics import TaskMetrics
from yivl.evaluation.records import write_text
from yivl.evaluation.report import bar_chart, summary_markdown, table_rows
from yivl.evaluation.runner import TaskOutcome
from yivl.evaluation.tasks import TaskSpec


@dataclass
class TaskResult:
    """A finished task: metrics over its scored records (None when every one was skipped), and the
    skipped records by reason."""

    spec: TaskSpec
    outcome: TaskOutcome
    metrics: TaskMetrics | None
    chance: Mapping[str, float]
    fingerprint: str
    skipped: Mapping[str, int]


def write_outputs(
    out_dir: Path,
    manifest: Mapping[str, Any],
    results: Sequence[TaskResult],
    timing: Mapping[str, float],
    resumed: bool,
    chart: bool,
) -> dict[str, Any]:
    """Write summary.json, summary.md and summary.png; print the table; return the summary."""
    summary = build_summary(manifest, results, timing, resumed)
    rows = [
        row
        for res in results
        for row in table_rows(
            res.spec.name, res.spec.kind, res.metrics, res.chance, sum(res.skipped.values())
        )
    ]
    write_text(out_dir / "summary.json", json.dumps(summary, indent=2, default=str) + "\n")
    markdown = summary_markdown(summary, rows)
    write_text(out_dir / "summary.md", markdown)
    if chart:
        panels = {
            res.spec.name: (res.spec.kind, res.metrics, res.chance)
            for res in results
            if res.metrics is not None
        }
        bar_chart(out_dir / "summary.png", panels)
    print(markdown, flush=True)
    print(
        f"samples, summary.json, summary.md{' and summary.png' if chart else ''} are in {out_dir}", flush=True
    )
    return summary


def build_summary(
    manifest: Mapping[str, Any], results: Sequence[TaskResult], timing: Mapping[str, float], resumed: bool
) -> dict[str, Any]:
    """The summary.json object (see docs/evaluation.md): results first, then how they were produced."""
    tasks, parsers, checks, task_timing = {}, {}, {}, {}
    computed = tokens = 0
    for res in results:
        tasks[res.spec.name] = task_entry(res)
        parsers[res.spec.name] = res.spec.kind.parsers(res.spec.options)
        checks[res.spec.name] = res.outcome.batch_check
        task_timing[res.spec.name] = _rates(res.outcome.wall_s, res.outcome.computed, res.outcome.gen_tokens)
        computed += res.outcome.computed
        tokens += res.outcome.gen_tokens
    total = {**_rates(timing["wall_s"], computed, tokens), "tasks": task_timing, "resumed": resumed}
    total["processes"] = timing["processes"]
    return {
        "tasks": tasks,
        "parsers": parsers,
        "batch_check": {k: v for k, v in checks.items() if v is not None},
        "settings": manifest["settings"],
        "seed": manifest["settings"]["seed"],
        "checkpoint": manifest["checkpoint"],
        "dataset_fingerprint": {k: v["fingerprint"] for k, v in manifest["datasets"].items()},
        "datasets": manifest["datasets"],
        "versions": versions(),
        "git_commit": git_commit(),
        "timing": total,
        "date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "notes": NOTES,
    }


def task_entry(res: TaskResult) -> dict[str, Any]:
    """One task of ``summary.json``: its metrics over the scored samples, and the skipped ones by reason."""
    entry: dict[str, Any] = {"type": res.spec.type}
    if res.metrics is None:
        entry |= {"main": None, "n": 0, "n_unparsed": 0, "stderr": None}
        entry["note"] = f"every sample was skipped ({describe(res.skipped)}); the task has no metric"
    else:
        entry |= res.metrics.to_dict()
    entry |= {"n_skipped": sum(res.skipped.values()), "skipped": dict(res.skipped)}
    entry["chance"] = dict(res.chance)
    return entry


NOTES = [
    "Greedy decoding; prompts use the training chat format (each sample record holds its exact prompt).",
    "Batched generation pads on the left; a near-tie can flip a greedy answer between batch sizes. "
    "batch_check lists such answers among the first samples; batch_size=1 is the reference mode.",
    "Unparsed answers count as wrong and are counted in n_unparsed; there is no random fallback.",
    "Samples that do not fit the model's context are skipped, counted by reason in n_skipped and "
    "skipped, and left out of every metric; n counts the scored samples.",
]


def _rates(wall_s: float, samples: int, tokens: int) -> dict[str, float]:
    """Throughput of what this run computed (a resumed run counts only its own samples)."""
    wall = max(wall_s, 1e-9)
    return {
        "wall_s": round(wall_s, 3),
        "samples": samples,
        "samples_per_s": round(samples / wall, 3),
        "gen_tokens": tokens,
        "tokens_per_s": round(tokens / wall, 3),
    }


def versions() -> dict[str, str]:
    """Versions of the packages that can change a score."""
    import numpy
    import torch
    import transformers

    import yivl

    return {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "numpy": numpy.__version__,
        "yivl": yivl.__version__,
    }


def git_commit() -> str | None:
    """The project's git commit (None outside a git checkout or before the first commit)."""
    root = Path(__file__).resolve().parents[2]
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True, timeout=5, check=False
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() or None if out.returncode == 0 else None
