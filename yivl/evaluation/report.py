"""The human-readable results: a Markdown table (stdout and summary.md) and a bar chart PNG."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from yivl.data.reasons import REASONS, describe
from yivl.evaluation.metrics import TaskMetrics
from yivl.evaluation.task_types.base import TaskType


def table_rows(
    name: str, kind: TaskType, metrics: TaskMetrics | None, chance: Mapping[str, float], skipped: int = 0
) -> list[list[str]]:
    """Rows ``Task | Metric | Value | Stderr | N | Skipped | Unparsed | Chance`` for one task.

    The type names the metrics shown (``display``, then its ``group_prefixes``' groups; the other group
    breakdowns stay in summary.json), and which of them show n_unparsed (``parsed_metrics``).
    ``metrics`` is None when every sample was skipped: one row says so. Skipped samples are counted for
    the task, not per answer-type group, so group rows show "-" there.
    """
    if metrics is None:
        return [[name, "(every sample skipped)", "-", "-", "0", str(skipped), "-", "-"]]
    groups = kind.group_prefixes
    names = [m for m in kind.display if m in metrics.values]
    for prefix in groups:
        names += [m for m in metrics.values if m.startswith(prefix)]
    rows = []
    percent = kind.percent
    for metric in names:
        n = metrics.group_n.get(metric, metrics.group_n.get(metric.split("/", 1)[-1], metrics.n))
        grouped = metric.startswith(groups)  # startswith(()) is False
        rows.append(
            [
                name,
                metric,
                _fmt(metrics.values[metric], percent),
                _fmt(metrics.stderr.get(metric), percent),
                str(n),
                "-" if grouped else str(skipped),
                str(metrics.n_unparsed) if _parsed(kind, metric) else "-",
                _fmt(chance.get(metric), percent),
            ]
        )
    return rows


def _parsed(kind: TaskType, metric: str) -> bool:
    return kind.parsed_metrics is None or metric in kind.parsed_metrics


def _fmt(value: float | None, percent: bool = False) -> str:
    """Percentages with 2 decimals; other scales (NLL, CIDEr, MME points) with 3-4 significant places."""
    if value is None:
        return "-"
    if percent:
        return f"{value:.2f}"
    if abs(value) >= 100:
        return f"{value:.1f}"
    return f"{value:.3f}" if abs(value) >= 1 else f"{value:.4f}"


def markdown_table(rows: list[list[str]]) -> str:
    """A GitHub Markdown table with the standard header."""
    header = ["Task", "Metric", "Value", "Stderr", "N", "Skipped", "Unparsed", "Chance"]
    widths = (
        [max(len(h), *(len(r[i]) for r in rows)) for i, h in enumerate(header)]
        if rows
        else [len(h) for h in header]
    )
    lines = ["| " + " | ".join(h.ljust(w) for h, w in zip(header, widths, strict=True)) + " |"]
    lines.append("|" + "|".join("-" * (w + 2) for w in widths) + "|")
    lines += ["| " + " | ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)) + " |" for r in rows]
    return "\n".join(lines)


def summary_markdown(summary: Mapping[str, Any], rows: list[list[str]]) -> str:
    """summary.md: the table plus the checkpoint, data and settings that produced it."""
    ckpt = summary["checkpoint"]
    lines = [
        "# Evaluation summary",
        "",
        f"Checkpoint: `{ckpt['path']}` ({ckpt['kind']}, fingerprint `{ckpt['fingerprint'][:16]}`)",
        f"Date: {summary['date']}  ",
        f"Batch size {summary['settings']['batch_size']}, greedy decoding, seed {summary['seed']}.",
        "",
        markdown_table(rows),
        "",
        *skip_notes(summary["tasks"]),
    ]
    for name, check in summary.get("batch_check", {}).items():
        if check:
            lines.append(
                f"Batch check `{name}`: {len(check['differ'])} of the first {check['checked']} answers "
                f"differ between batch size {check['batch_size']} and 1."
            )
    return "\n".join(lines) + "\n"


def skip_notes(tasks: Mapping[str, Mapping[str, Any]]) -> list[str]:
    """Lines under the table naming each task's skipped samples and why (none when nothing was skipped)."""
    lines = []
    for name, task in tasks.items():
        skipped = task["skipped"]
        if not skipped:
            continue
        why = "; ".join(f"{describe({r: c})}: {REASONS.get(r, r)}" for r, c in skipped.items())
        total = task["n"] + task["n_skipped"]
        if task["n"] == 0:
            lines.append(f"Task `{name}`: all {total} samples were skipped ({why}); it has no metric.")
        else:
            lines.append(
                f"Task `{name}`: {task['n_skipped']} of {total} samples skipped ({why}); its metrics "
                f"are over the {task['n']} scored samples."
            )
    return [*lines, ""] if lines else []


def bar_chart(path: Path, tasks: Mapping[str, tuple[TaskType, TaskMetrics, Mapping[str, float]]]) -> Path:
    """One panel per task with its headline metrics as bars (stderr as error bars, chance dashed)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = [(name, kind, m, ch) for name, (kind, m, ch) in tasks.items() if _chart_metrics(kind, m)]
    fig, axes = plt.subplots(1, max(1, len(panels)), figsize=(3.2 * max(1, len(panels)), 3.4), squeeze=False)
    for ax, (name, kind, metrics, chance) in zip(axes[0], panels, strict=False):
        names = _chart_metrics(kind, metrics)
        values = [metrics.values[n] for n in names]
        errors = [metrics.stderr.get(n) or 0.0 for n in names]
        ax.bar(range(len(names)), values, yerr=errors, capsize=3, color="#4c72b0")
        for i, n in enumerate(names):
            if n in chance:
                ax.hlines(chance[n], i - 0.4, i + 0.4, colors="#c44e52", linestyles="dashed")
        ax.set_xticks(range(len(names)), names, rotation=30, ha="right", fontsize=8)
        ax.set_title(f"{name} ({kind.name})", fontsize=9)
        if kind.percent:
            ax.set_ylim(0, 100)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def _chart_metrics(kind: TaskType, metrics: TaskMetrics) -> list[str]:
    return [m for m in kind.display if m in metrics.values and m != "n_tokens"]
