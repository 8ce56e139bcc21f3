"""Each task's summary from its per-sample records, through its type (``yivl.evaluation.task_types``).

Records are plain dicts (one JSONL line each), so a resumed run summarises exactly what an
uninterrupted one would. Everything numeric comes from ``yivl.evaluation.metrics``.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping
from typing import Any

from yivl.evaluation.metrics import TaskMetrics
from yivl.evaluation.tasks import TaskSpec


def scored_records(records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The records the metrics are computed over: all but the skipped ones."""
    return [r for r in records if not r.get("skipped")]


def skip_counts(records: list[dict[str, Any]]) -> dict[str, int]:
    """Skipped records by reason (e.g. ``{"too_long": 2}``), most frequent first."""
    counts = Counter(str(r["skipped"]) for r in records if r.get("skipped"))
    return dict(sorted(counts.items(), key=lambda kv: (-kv[1], kv[0])))


def summarize(spec: TaskSpec, records: list[dict[str, Any]], iters: int, seed: int) -> TaskMetrics:
    """The task's metrics from its scored records (ordered by ``index``; at least one)."""
    return spec.kind.summarize(records, spec.options, iters, seed)


def chance_levels(spec: TaskSpec, records: list[dict[str, Any]]) -> Mapping[str, float]:
    """Expected score of uniform random guessing, where it is defined (percent)."""
    return spec.kind.chance(records)
