"""VQA soft accuracy (VQAv2, VizWiz, OK-VQA, TextVQA): leave-one-out over the 10 human answers."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from yivl.errors import YivlError
from yivl.evaluation.metrics.summary import TaskMetrics, grouped_means, mean_metric
from yivl.evaluation.metrics.vqa_norm import evalai_normalize, official_normalize, strip_whitespace

VQA_NORMS = ("evalai", "official")
NUM_VQA_ANSWERS = 10


@dataclass(frozen=True)
class VqaScore:
    """One question's score: the prediction as it was compared, and the soft accuracy in [0, 1]."""

    prediction: str
    accuracy: float


def leave_one_out_accuracy(prediction: str, answers: Sequence[str]) -> float:
    """Mean over i of ``min(1, #{j != i : answers[j] == prediction} / 3)``.

    With 10 answers of which k equal the prediction: k=0 -> 0, 1 -> 0.3, 2 -> 0.6, 3 -> 0.9, >=4 -> 1.
    """
    matches = sum(answer == prediction for answer in answers)
    per_subset = [min(1.0, (matches - (answer == prediction)) / 3) for answer in answers]
    return sum(per_subset) / len(per_subset)


def score_vqa(prediction: str, answers: Sequence[str], norm: str = "evalai", where: str = "?") -> VqaScore:
    """Score one prediction against exactly 10 human answers.

    ``norm="evalai"`` (default; LLaVA, lmms-eval, TextVQA, the EvalAI server after LLaVA's upload
    conversion) normalises the prediction and every answer with the mmf EvalAI processor.
    ``norm="official"`` reproduces ``vqaEval.py``: whitespace only, and the full normalisation of
    both sides only when the answers are not unanimous, so "Yes." scores 0 against ten "yes".
    ``where`` names the sample in the error raised for a wrong number of answers.
    """
    if len(answers) != NUM_VQA_ANSWERS:
        raise YivlError(
            f"{where}: a VQA record needs exactly {NUM_VQA_ANSWERS} answers, got {len(answers)}; "
            "fix the 'answers' list"
        )
    if norm == "evalai":
        pred, refs = evalai_normalize(prediction), [evalai_normalize(a) for a in answers]
    elif norm == "official":
        pred, refs = strip_whitespace(prediction), [strip_whitespace(a) for a in answers]
        if len(set(refs)) > 1:
            pred, refs = official_normalize(pred), [official_normalize(a) for a in refs]
    else:
        raise YivlError(f"unknown VQA normalisation {norm!r}; choose one of {', '.join(VQA_NORMS)}")
    return VqaScore(prediction=pred, accuracy=leave_one_out_accuracy(pred, refs))


def summarize_vqa(
    accuracies: Sequence[float],
    answer_types: Sequence[str | None] | None = None,
    question_types: Sequence[str | None] | None = None,
) -> TaskMetrics:
    """Overall accuracy (percent, unrounded), per answer type and per question type, with stderrs.

    ``vqaEval.py`` prints ``round(100 * mean, 2)``; we keep full precision and round only for display.
    """
    value, err = mean_metric("accuracy", accuracies)
    result = TaskMetrics(main="accuracy", values={"accuracy": value}, stderr={"accuracy": err})
    result.n = len(accuracies)
    for label, groups in (("accuracy/answer_type", answer_types), ("accuracy/question_type", question_types)):
        if groups is not None:
            values, errors, counts = grouped_means(label, accuracies, groups)
            result.values.update(values)
            result.stderr.update(errors)
            result.group_n.update(counts)
    return result
