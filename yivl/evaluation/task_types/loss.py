"""``loss``: the token-weighted NLL and perplexity of whole conversations, masked exactly as in training."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from yivl.data.chat import build_training_example, expanded_length, training_text, turns_from_record
from yivl.data.checks import check_record
from yivl.data.formats import DEFAULT_IMAGE_TOKENS, image_tokens, normalize_record
from yivl.data.tokenizer import YiTokenizer
from yivl.evaluation.items import Item, base_item
from yivl.evaluation.metrics import TaskMetrics
from yivl.evaluation.prompting import Prepared
from yivl.evaluation.sources import RawRecord
from yivl.evaluation.task_types.base import Records, TaskType, choice

PADDING_SIDES = ("right", "left")


@dataclass(frozen=True)
class LossOptions:
    padding_side: str = choice("right", *PADDING_SIDES)
    image_tokens: list[str] = field(default_factory=lambda: list(DEFAULT_IMAGE_TOKENS))


class LossType(TaskType):
    name = "loss"
    Options = LossOptions
    generation = False
    display = ("nll", "ppl")

    def build_item(self, record: RawRecord, options: Mapping[str, Any]) -> Item:
        item = base_item(record)
        data = dict(record.data)
        if data.get("image") is not None and record.image is not None:
            data["image"] = record.image.display()
        tokens = image_tokens(options.get("image_tokens"), "task_options.loss.image_tokens")
        data = normalize_record(data, tokens).record  # LLaVA's <image>, placed as in training
        check_record(data, record.where, tokens)
        item.turns = turns_from_record(data, record.where)
        return item

    def scores_likelihood(self, options: Mapping[str, Any]) -> bool:
        return True

    def prepare(
        self, item: Item, options: Mapping[str, Any], tokenizer: YiTokenizer, image_tokens: int
    ) -> Prepared:
        """The training example builder's ids and labels (same text and masks as training)."""
        assert item.turns is not None
        example = build_training_example(tokenizer, item.turns, sample_id=item.id)
        return Prepared(
            prompt=training_text(item.turns),
            sequences=[(example.input_ids, example.labels)],
            length=expanded_length(example.input_ids, image_tokens),
        )

    def padding_side(self, options: Mapping[str, Any]) -> str:
        return options["padding_side"]

    def score_sequences(
        self, item: Item, sums: Sequence[float], counts: Sequence[int], options: Mapping[str, Any]
    ) -> dict[str, Any]:
        (logprob,), (n_tokens,) = sums, counts
        return {"logprob": logprob, "n_tokens": n_tokens, "nll": -logprob / n_tokens if n_tokens else None}

    def summarize(self, records: Records, options: Mapping[str, Any], iters: int, seed: int) -> TaskMetrics:
        return summarize_loss(records)


def summarize_loss(records: Records) -> TaskMetrics:
    """Token-weighted NLL = sum(-log p) / sum(tokens), PPL = exp(NLL); delta-method stderrs over samples."""
    nll = [-float(r["logprob"]) for r in records]
    tokens = [int(r["n_tokens"]) for r in records]
    total = sum(tokens)
    if total == 0:
        raise ValueError("no supervised tokens to compute a loss")
    mean_nll = math.fsum(nll) / total
    err = _ratio_stderr(nll, tokens, mean_nll)
    ppl = math.exp(mean_nll)
    return TaskMetrics(
        main="nll",
        values={"nll": mean_nll, "ppl": ppl, "n_tokens": float(total)},
        stderr={"nll": err, "ppl": None if err is None else ppl * err},
        n=len(records),
    )


def _ratio_stderr(sums: Sequence[float], counts: Sequence[int], ratio: float) -> float | None:
    """Standard error of ``sum(sums) / sum(counts)`` by the delta method over samples (None if n < 2)."""
    n = len(sums)
    if n < 2:
        return None
    mean_count = sum(counts) / n
    residual = [s - ratio * c for s, c in zip(sums, counts, strict=True)]
    var = math.fsum(r * r for r in residual) / (n - 1)
    return math.sqrt(var / n) / mean_count


TYPE = LossType()
