"""MME: per-subtask acc and acc+ (two yes/no questions per image), perception and cognition totals."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from yivl.errors import YivlError
from yivl.evaluation.metrics.stderr import DEFAULT_BOOTSTRAP_ITERS, bootstrap_replicates, resample
from yivl.evaluation.metrics.summary import TaskMetrics

PERCEPTION = (
    "existence",
    "count",
    "position",
    "color",
    "posters",
    "celebrity",
    "scene",
    "landmark",
    "artwork",
    "ocr",
)
COGNITION = ("commonsense_reasoning", "numerical_calculation", "text_translation", "code_reasoning")
QUESTIONS_PER_IMAGE = 2


def mme_subtask(category: str) -> str:
    """Canonical subtask name: lowercase, spaces and hyphens to underscores (``"OCR"`` -> ``"ocr"``)."""
    return "_".join(str(category).strip().lower().replace("-", " ").split())


def _pair_counts(
    correct: Sequence[bool], categories: Sequence[str], pair_ids: Sequence[str]
) -> dict[str, np.ndarray]:
    """Per subtask, the number of correct answers (0, 1 or 2) of each image: int array [images]."""
    pairs: dict[tuple[str, str], list[bool]] = {}
    for ok, category, pair in zip(correct, categories, pair_ids, strict=True):
        pairs.setdefault((mme_subtask(category), str(pair)), []).append(bool(ok))
    counts: dict[str, list[int]] = {}
    for (subtask, pair), answers in pairs.items():
        if len(answers) != QUESTIONS_PER_IMAGE:
            raise YivlError(
                f"MME image {pair!r} ({subtask}) has {len(answers)} questions; MME needs exactly "
                f"{QUESTIONS_PER_IMAGE} per image: fix the 'pair_id' fields"
            )
        counts.setdefault(subtask, []).append(sum(answers))
    return {subtask: np.array(c, dtype=np.int64) for subtask, c in counts.items()}


def _scores(counts: dict[str, np.ndarray]) -> dict[str, float]:
    """acc, acc+ and score of every subtask, and the perception/cognition/other/total sums."""
    out: dict[str, float] = {}
    totals = {"perception": 0.0, "cognition": 0.0, "other": 0.0}
    for subtask, c in counts.items():
        acc = 100.0 * float(c.sum()) / (QUESTIONS_PER_IMAGE * len(c))
        acc_plus = 100.0 * float(np.mean(c == QUESTIONS_PER_IMAGE))
        out[f"acc/{subtask}"], out[f"acc_plus/{subtask}"] = acc, acc_plus
        out[f"score/{subtask}"] = acc + acc_plus
        family = "perception" if subtask in PERCEPTION else "cognition" if subtask in COGNITION else "other"
        totals[family] += acc + acc_plus
    out["perception"], out["cognition"] = totals["perception"], totals["cognition"]
    out["total"] = totals["perception"] + totals["cognition"]
    if any(s not in PERCEPTION + COGNITION for s in counts):
        out["other"] = totals["other"]
    return out


def summarize_mme(
    predictions: Sequence[str],
    labels: Sequence[str],
    categories: Sequence[str],
    pair_ids: Sequence[str],
    iters: int = DEFAULT_BOOTSTRAP_ITERS,
    seed: int = 0,
) -> TaskMetrics:
    """MME scores from parsed answers (``parse_mme``: yes/no/other) and gold yes/no labels.

    Per subtask: ``acc`` = percent of questions right ("other" is wrong and stays in the
    denominator), ``acc_plus`` = percent of images with both questions right, ``score`` = acc + acc+
    (max 200). ``perception`` sums the present perception subtasks (max 2000 with all 10),
    ``cognition`` the cognition ones (max 800), ``total`` both (max 2800); subtasks outside the
    official 14 are summed into ``other`` and left out of the totals. Stderrs: bootstrap over
    images, resampled within each subtask.
    """
    if not predictions:
        raise ValueError("no MME samples to score")
    correct = [p == t for p, t in zip(predictions, labels, strict=True)]
    counts = _pair_counts(correct, categories, pair_ids)
    values = _scores(counts)

    def statistic(rng: np.random.Generator) -> np.ndarray:
        resampled = {s: c[resample(rng, len(c))] for s, c in counts.items()}
        return np.array(list(_scores(resampled).values()))

    replicates = bootstrap_replicates(statistic, iters=iters, seed=seed)
    spread = replicates.std(axis=0, ddof=1)
    errors: dict[str, float | None] = {name: float(err) for name, err in zip(values, spread, strict=True)}
    result = TaskMetrics(main="total", values=values, stderr=errors, n=len(predictions))
    result.n_unparsed = sum(p == "other" for p in predictions)
    result.group_n = {subtask: QUESTIONS_PER_IMAGE * len(c) for subtask, c in counts.items()}
    return result
