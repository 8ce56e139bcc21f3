"""``yesno`` (= ``pope``): yes/no answers scored with POPE's F1, accuracy, precision, recall and
yes-ratio, per split."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from yivl.evaluation.items import Item, base_item, question_text, with_suffix
from yivl.evaluation.metrics import TaskMetrics, normalize_label, parse_pope, summarize_pope, yesno_word
from yivl.evaluation.sources import RawRecord
from yivl.evaluation.task_types.base import GenerationOptions, Records, TaskType, column, group_labels
from yivl.evaluation.task_types.vqa import SHORT_ANSWER


@dataclass(frozen=True)
class YesNoOptions(GenerationOptions):
    suffix: str = SHORT_ANSWER


def yesno_item(record: RawRecord, options: Mapping[str, Any]) -> Item:
    """A yes/no question with its normalised ``yes``/``no`` target (POPE's and MME's records)."""
    item = base_item(record)
    item.question = with_suffix(question_text(record, "yes/no"), options.get("suffix"))
    item.target = normalize_label(record.data.get("answer", ""), record.where)
    if "split" not in item.meta and "category" in item.meta:
        item.meta["split"] = item.meta["category"]  # POPE files name the split 'category'
    return item


class YesNoType(TaskType):
    name = "yesno"
    aliases = ("pope",)
    Options = YesNoOptions
    reads = ("mme",)
    display = ("f1", "accuracy", "precision", "recall", "yes_ratio", "f1_avg")
    group_prefixes = ("f1/",)
    parsed_metrics = None
    percent = True

    def build_item(self, record: RawRecord, options: Mapping[str, Any]) -> Item:
        return yesno_item(record, options)

    def score_output(self, item: Item, output: str, options: Mapping[str, Any], seed: int) -> dict[str, Any]:
        parsed = parse_pope(output)
        return {"parsed": parsed, "correct": parsed == item.target, "unclear": yesno_word(output) is None}

    def summarize(self, records: Records, options: Mapping[str, Any], iters: int, seed: int) -> TaskMetrics:
        splits = group_labels(records, "split")
        unclear = column(records, "unclear")
        return summarize_pope(
            column(records, "parsed"), column(records, "target"), splits, unclear, iters, seed
        )

    def chance(self, records: Records) -> Mapping[str, float]:
        return {"accuracy": 50.0}

    def parsers(self, options: Mapping[str, Any]) -> dict[str, str]:
        return {"yesno_parser": "pope (official RUCAIBox/POPE rule)"}


TYPE = YesNoType()
