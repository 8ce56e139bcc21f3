"""``mme``: MME's yes/no subtasks, scored as perception, cognition and total points (acc + acc+)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from yivl.errors import YivlError
from yivl.evaluation.items import Item
from yivl.evaluation.metrics import TaskMetrics, parse_mme, summarize_mme
from yivl.evaluation.sources import RawRecord
from yivl.evaluation.task_types.base import Records, TaskType, column
from yivl.evaluation.task_types.yesno import YesNoOptions, yesno_item


class MmeType(TaskType):
    name = "mme"
    Options = YesNoOptions
    reads = ("yesno",)
    display = ("perception", "cognition", "total")
    parsed_metrics = None

    def build_item(self, record: RawRecord, options: Mapping[str, Any]) -> Item:
        item = yesno_item(record, options)
        item.meta.pop("split", None)
        if "category" not in item.meta:
            raise YivlError(f"{record.where}: an mme record needs a 'category' (its subtask, e.g. existence)")
        if "pair_id" not in item.meta:
            if record.image is None:
                raise YivlError(
                    f"{record.where}: an mme record needs a 'pair_id' or an image to pair questions"
                )
            item.meta["pair_id"] = record.image.display()
        return item

    def score_output(self, item: Item, output: str, options: Mapping[str, Any], seed: int) -> dict[str, Any]:
        parsed = parse_mme(output)
        return {"parsed": parsed, "correct": parsed == item.target}

    def summarize(self, records: Records, options: Mapping[str, Any], iters: int, seed: int) -> TaskMetrics:
        cats, pairs = column(records, "category"), column(records, "pair_id")
        return summarize_mme(column(records, "parsed"), column(records, "target"), cats, pairs, iters, seed)

    def chance(self, records: Records) -> Mapping[str, float]:
        return {"acc": 50.0}

    def parsers(self, options: Mapping[str, Any]) -> dict[str, str]:
        return {"yesno_parser": "mme (official calculation.py rule)"}


TYPE = MmeType()
