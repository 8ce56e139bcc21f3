"""POPE metrics (positive class = yes): accuracy, precision, recall, F1 and the yes-ratio of predictions."""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

from yivl.evaluation.metrics.stderr import (
    DEFAULT_BOOTSTRAP_ITERS,
    bootstrap_replicates,
    mean_stderr,
    resample,
)
from yivl.evaluation.metrics.summary import TaskMetrics

POPE_METRICS = ("f1", "accuracy", "precision", "recall", "yes_ratio")


def pope_scores(pred_yes: np.ndarray, label_yes: np.ndarray) -> dict[str, float]:
    """The five POPE numbers in percent from boolean arrays of shape [N].

    ``yes_ratio`` is the share of *predicted* yes (the official definition; lmms-eval computes it
    from the labels). A zero denominator gives 0 where the official script would raise.
    """
    tp = int(np.sum(pred_yes & label_yes))
    fp = int(np.sum(pred_yes & ~label_yes))
    fn = int(np.sum(~pred_yes & label_yes))
    n = len(pred_yes)
    precision = tp / (tp + fp) if tp + fp else 0.0
    recall = tp / (tp + fn) if tp + fn else 0.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return {
        "f1": 100 * f1,
        "accuracy": 100 * float(np.mean(pred_yes == label_yes)) if n else 0.0,
        "precision": 100 * precision,
        "recall": 100 * recall,
        "yes_ratio": 100 * float(np.mean(pred_yes)) if n else 0.0,
    }


def _scores_with_errors(
    pred_yes: np.ndarray, label_yes: np.ndarray, iters: int, seed: int
) -> tuple[dict[str, float], dict[str, float | None]]:
    """POPE scores plus stderrs: analytic for accuracy and yes-ratio, one bootstrap for P/R/F1."""
    values = pope_scores(pred_yes, label_yes)
    errors: dict[str, float | None] = {}
    for name, per_sample in (("accuracy", pred_yes == label_yes), ("yes_ratio", pred_yes)):
        err = mean_stderr(per_sample.astype(float).tolist())
        errors[name] = None if err is None else 100 * err
    n, resampled = len(pred_yes), ("f1", "precision", "recall")
    if n < 2:
        return values, {**errors, **dict.fromkeys(resampled)}

    def statistic(rng: np.random.Generator) -> np.ndarray:
        idx = resample(rng, n)
        scores = pope_scores(pred_yes[idx], label_yes[idx])
        return np.array([scores[name] for name in resampled])

    spread = bootstrap_replicates(statistic, iters=iters, seed=seed).std(axis=0, ddof=1)
    errors.update({name: float(err) for name, err in zip(resampled, spread, strict=True)})
    return values, errors


def summarize_pope(
    predictions: Sequence[str],
    labels: Sequence[str],
    splits: Sequence[str | None] | None = None,
    unclear: Sequence[bool] | None = None,
    iters: int = DEFAULT_BOOTSTRAP_ITERS,
    seed: int = 0,
) -> TaskMetrics:
    """POPE over all samples and per split (random/popular/adversarial), plus ``f1_avg``.

    ``predictions`` are parsed answers (``parse_pope``) and ``labels`` the normalised gold answers.
    ``f1_avg`` (LLaVA-1.5's single "POPE" number) is the mean of the split F1s; its stderr combines
    the split stderrs as independent. ``unclear`` flags answers the official rule defaulted to yes;
    their count is reported as ``n_unparsed`` (they are still scored as the official script does).
    """
    pred_yes = np.array([p == "yes" for p in predictions], dtype=bool)
    label_yes = np.array([t == "yes" for t in labels], dtype=bool)
    if len(pred_yes) != len(label_yes) or len(pred_yes) == 0:
        raise ValueError(
            f"need equal, non-zero numbers of predictions and labels, got {len(pred_yes)}/{len(label_yes)}"
        )
    values, errors = _scores_with_errors(pred_yes, label_yes, iters, seed)
    result = TaskMetrics(main="f1", values=values, stderr=errors, n=len(pred_yes))
    result.n_unparsed = sum(bool(u) for u in unclear) if unclear is not None else 0
    if splits is not None:
        _add_splits(result, pred_yes, label_yes, splits, iters, seed)
    return result


def _add_splits(
    result: TaskMetrics,
    pred_yes: np.ndarray,
    label_yes: np.ndarray,
    splits: Sequence[str | None],
    iters: int,
    seed: int,
) -> None:
    """Per-split POPE numbers and ``f1_avg`` with their stderrs, added to ``result``."""
    names = list(dict.fromkeys(str(s) for s in splits if s is not None))
    split_arr = np.array([str(s) if s is not None else "" for s in splits], dtype=object)
    f1s, f1_errs = [], []
    for split in names:
        mask = split_arr == split
        values, errors = _scores_with_errors(pred_yes[mask], label_yes[mask], iters, seed)
        for metric in POPE_METRICS:
            result.values[f"{metric}/{split}"] = values[metric]
            result.stderr[f"{metric}/{split}"] = errors[metric]
        result.group_n[split] = int(mask.sum())
        f1s.append(values["f1"])
        f1_errs.append(errors["f1"])
    result.values["f1_avg"] = sum(f1s) / len(f1s)
    known = all(e is not None for e in f1_errs)
    result.stderr["f1_avg"] = math.sqrt(sum(e * e for e in f1_errs)) / len(f1_errs) if known else None
