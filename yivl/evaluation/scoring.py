"""Per-sample scoring of model outputs, and each task's summary from its per-sample records.

Everything numeric comes from ``yivl.evaluation.metrics``; this module only maps records to those
functions. Records are plain dicts (one JSONL line each), so a resumed run summarises exactly what an
uninterrupted one would.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Mapping, Sequence
from typing import Any

from yivl.evaluation.items import Item
from yivl.evaluation.metrics import (
    TaskMetrics,
    choice_letters,
    eval_mmmu_open,
    extract_choice,
    parse_mme,
    parse_mmmu_choice,
    parse_mmmu_open,
    parse_pope,
    pick_by_likelihood,
    score_captions,
    score_vqa,
    summarize_mcq,
    summarize_mme,
    summarize_pope,
    summarize_vqa,
    yesno_word,
)
from yivl.evaluation.metrics.summary import mean_metric
from yivl.evaluation.tasks import TaskSpec


def score_output(spec: TaskSpec, item: Item, output: str, seed: int = 0) -> dict[str, Any]:
    """Fields a generated answer adds to its sample record (parsed answer, correctness, ...).

    ``seed`` seeds the opt-in MMMU parser's per-question guess.
    """
    opts, kind = spec.options, spec.type
    if kind == "vqa":
        score = score_vqa(output, item.target, norm=opts["norm"], where=item.where)
        return {"parsed": score.prediction, "accuracy": score.accuracy}
    if kind == "yesno":
        parsed = parse_pope(output)
        return {"parsed": parsed, "correct": parsed == item.target, "unclear": yesno_word(output) is None}
    if kind == "mme":
        parsed = parse_mme(output)
        return {"parsed": parsed, "correct": parsed == item.target}
    if kind == "mcq":
        return _score_choice(spec, item, output, seed)
    return {}


def _score_choice(spec: TaskSpec, item: Item, output: str, seed: int) -> dict[str, Any]:
    if item.meta.get("open"):
        predictions = parse_mmmu_open(output)
        return {"parsed": predictions, "correct": eval_mmmu_open(item.target, predictions), "unparsed": False}
    choices = item.meta["choices"]
    if spec.options["parser"] == "mmmu":
        index2ans = dict(zip(choice_letters(len(choices)), choices, strict=True))
        letter, guessed = parse_mmmu_choice(output, index2ans, question_id=item.id, seed=seed)
        return {"parsed": letter, "correct": letter == item.target, "unparsed": guessed, "guessed": guessed}
    letter = extract_choice(output, choices)
    return {"parsed": letter, "correct": letter == item.target, "unparsed": letter is None}


def score_likelihood(item: Item, sums: Sequence[float], counts: Sequence[int]) -> dict[str, Any]:
    """Fields of an MCQ-by-likelihood result: per-option log-prob sums and token counts, both picks."""
    letters = choice_letters(len(sums))
    by_sum, by_mean = pick_by_likelihood(sums, counts)
    return {
        "ll_sum": [round(float(s), 6) for s in sums],
        "ll_tokens": list(counts),
        "pick_sum": letters[by_sum],
        "pick_mean": letters[by_mean],
        "correct_sum": letters[by_sum] == item.target,
        "correct_mean": letters[by_mean] == item.target,
    }


def scored_records(records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The records the metrics are computed over: all but the skipped ones."""
    return [r for r in records if not r.get("skipped")]


def skip_counts(records: list[dict[str, Any]]) -> dict[str, int]:
    """Skipped records by reason (e.g. ``{"too_long": 2}``), most frequent first."""
    counts = Counter(str(r["skipped"]) for r in records if r.get("skipped"))
    return dict(sorted(counts.items(), key=lambda kv: (-kv[1], kv[0])))


def summarize(spec: TaskSpec, records: list[dict[str, Any]], iters: int, seed: int) -> TaskMetrics:
    """The task's metrics from its scored records (ordered by ``index``; at least one)."""
    kind = spec.type
    if kind == "loss":
        return summarize_loss(records)
    if kind == "vqa":
        return summarize_vqa(
            [r["accuracy"] for r in records], _field(records, "answer_type"), _field(records, "question_type")
        )
    if kind == "yesno":
        splits = _field(records, "split")
        unclear = [r["unclear"] for r in records]
        return summarize_pope(_parsed(records), _targets(records), splits, unclear, iters, seed)
    if kind == "mme":
        cats = [r["category"] for r in records]
        pairs = [r["pair_id"] for r in records]
        return summarize_mme(_parsed(records), _targets(records), cats, pairs, iters, seed)
    if kind == "caption":
        refs = [r["target"] for r in records]
        hyps = [r["raw_output"] for r in records]
        result = score_captions(hyps, refs, spec.options["tokenizer"], spec.options.get("jar"), iters, seed)
        return result.metrics
    return summarize_choice(spec, records)


def _parsed(records: list[dict]) -> list[str]:
    return [r["parsed"] for r in records]


def _targets(records: list[dict]) -> list[str]:
    return [r["target"] for r in records]


def _field(records: list[dict], key: str) -> list[str | None] | None:
    """The per-record group labels of ``key``, or None when no record has one."""
    values = [r.get(key) for r in records]
    return values if any(v is not None for v in values) else None


def summarize_choice(spec: TaskSpec, records: list[dict[str, Any]]) -> TaskMetrics:
    """MCQ: generation accuracy (CircularEval and MMMU guesses optional) and/or likelihood accuracies."""
    categories = _field(records, "category")
    result: TaskMetrics | None = None
    if spec.generates:
        groups = [str(r.get("pair_id", r["id"])) for r in records] if spec.options["circular"] else None
        correct = [bool(r["correct"]) for r in records]
        result = summarize_mcq(correct, [bool(r["unparsed"]) for r in records], categories, groups)
        if spec.options["parser"] == "mmmu":
            guessed = [bool(r.get("guessed")) for r in records]
            plain = [c and not g for c, g in zip(correct, guessed, strict=True)]
            _add_mean(result, "accuracy_without_guesses", plain)
            result.notes["n_guessed"] = sum(guessed)
    if spec.scores_likelihood:
        if result is None:
            result = TaskMetrics(main="acc_sum", values={}, n=len(records))
        _add_mean(result, "acc_sum", [bool(r["correct_sum"]) for r in records])
        _add_mean(result, "acc_mean", [bool(r["correct_mean"]) for r in records])
    assert result is not None
    return result


def _add_mean(result: TaskMetrics, name: str, flags: Sequence[bool]) -> None:
    value, err = mean_metric(name, [float(f) for f in flags])
    result.values[name], result.stderr[name] = value, err


def summarize_loss(records: list[dict[str, Any]]) -> TaskMetrics:
    """Token-weighted NLL = sum(-log p) / sum(tokens), PPL = exp(NLL); delta-method stderrs over samples."""
    nll = [-float(r["logprob"]) for r in records]
    tokens = [int(r["n_tokens"]) for r in records]
    total = sum(tokens)
    if total == 0:
        raise ValueError("no supervised tokens to compute a loss")
    mean_nll = math.fsum(nll) / total
    err = _ratio_stderr(nll, tokens, mean_nll)
    ppl = math.exp(mean_nll)
    result = TaskMetrics(
        main="nll",
        values={"nll": mean_nll, "ppl": ppl, "n_tokens": float(total)},
        stderr={"nll": err, "ppl": None if err is None else ppl * err},
        n=len(records),
    )
    return result


def _ratio_stderr(sums: Sequence[float], counts: Sequence[int], ratio: float) -> float | None:
    """Standard error of ``sum(sums) / sum(counts)`` by the delta method over samples (None if n < 2)."""
    n = len(sums)
    if n < 2:
        return None
    mean_count = sum(counts) / n
    residual = [s - ratio * c for s, c in zip(sums, counts, strict=True)]
    var = math.fsum(r * r for r in residual) / (n - 1)
    return math.sqrt(var / n) / mean_count


def chance_levels(spec: TaskSpec, records: list[dict[str, Any]]) -> Mapping[str, float]:
    """Expected score of uniform random guessing, where it is defined (percent)."""
    if spec.type == "mcq":
        options = [len(r["choices"]) for r in records if r.get("choices")]
        if not options:
            return {}
        level = 100.0 * sum(1 / k for k in options) / len(records)
        return dict.fromkeys(("accuracy", "acc_sum", "acc_mean"), level)
    if spec.type == "yesno":
        return {"accuracy": 50.0}
    if spec.type == "mme":
        return {"acc": 50.0}
    return {}
