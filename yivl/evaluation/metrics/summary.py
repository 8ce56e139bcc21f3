"""The common result shape of every metric family, and the per-group mean used by most of them."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from yivl.evaluation.metrics.stderr import mean_stderr


@dataclass
class TaskMetrics:
    """Aggregated metrics of one task.

    ``values`` maps metric names to numbers (accuracies in percent; caption metrics on the
    pycocoevalcap scale); group metrics use ``"<metric>/<group>"`` names with their sample counts in
    ``group_n``. ``stderr`` holds a standard error for the metrics that have one, ``main`` names the
    headline metric.
    """

    main: str
    values: dict[str, float]
    stderr: dict[str, float | None] = field(default_factory=dict)
    n: int = 0
    n_unparsed: int = 0
    group_n: dict[str, int] = field(default_factory=dict)
    notes: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """Flat JSON shape of ``summary.json``: metrics, ``n``, ``n_unparsed``, ``stderr`` (of ``main``)."""
        out: dict[str, Any] = dict(self.values)
        out.update({"main": self.main, "n": self.n, "n_unparsed": self.n_unparsed})
        out["stderr"] = self.stderr.get(self.main)
        out.update({f"{name}_stderr": err for name, err in self.stderr.items() if name != self.main})
        out.update({f"n/{group}": count for group, count in self.group_n.items()})
        out.update(self.notes)
        return out


def grouped_means(
    name: str, scores: Sequence[float], groups: Sequence[str | None], scale: float = 100.0
) -> tuple[dict[str, float], dict[str, float | None], dict[str, int]]:
    """Mean, standard error and count of ``scores`` per group (``None`` groups are skipped).

    Returns three dicts keyed ``"<name>/<group>"``, in order of first appearance.
    """
    if len(groups) != len(scores):
        raise ValueError(f"{len(scores)} scores but {len(groups)} group labels")
    members: dict[str, list[float]] = {}
    for score, group in zip(scores, groups, strict=True):
        if group is not None:
            members.setdefault(str(group), []).append(score)
    values, errors, counts = {}, {}, {}
    for group, group_scores in members.items():
        key = f"{name}/{group}"
        values[key] = scale * sum(group_scores) / len(group_scores)
        err = mean_stderr(group_scores)
        errors[key] = None if err is None else scale * err
        counts[key] = len(group_scores)
    return values, errors, counts


def mean_metric(name: str, scores: Sequence[float], scale: float = 100.0) -> tuple[float, float | None]:
    """``scale`` times the mean of ``scores`` and its standard error; an empty list is an error."""
    if not scores:
        raise ValueError(f"no samples to compute {name}")
    err = mean_stderr(scores)
    return scale * sum(scores) / len(scores), None if err is None else scale * err
