"""``vqa``: open answers scored by VQA soft accuracy against 10 reference answers."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from yivl.errors import YivlError
from yivl.evaluation.items import Item, base_item, question_text, with_suffix
from yivl.evaluation.metrics import VQA_NORMS, TaskMetrics, score_vqa, summarize_vqa
from yivl.evaluation.sources import RawRecord
from yivl.evaluation.task_types.base import GenerationOptions, Records, TaskType, choice, group_labels

NUM_VQA_ANSWERS = 10
SHORT_ANSWER = "\nAnswer the question using a single word or phrase."
"""LLaVA-1.5's short-answer suffix (vqa, yesno, mme and MCQ's likelihood cloze)."""


@dataclass(frozen=True)
class VqaOptions(GenerationOptions):
    norm: str = choice("evalai", *VQA_NORMS)
    suffix: str = SHORT_ANSWER


class VqaType(TaskType):
    name = "vqa"
    Options = VqaOptions
    display = ("accuracy",)
    group_prefixes = ("accuracy/answer_type/",)
    percent = True

    def build_item(self, record: RawRecord, options: Mapping[str, Any]) -> Item:
        item = base_item(record)
        answers = record.data.get("answers")
        if not isinstance(answers, list):
            raise YivlError(
                f"{record.where}: a vqa record needs an 'answers' list of {NUM_VQA_ANSWERS} strings"
            )
        if len(answers) != NUM_VQA_ANSWERS:
            raise YivlError(
                f"{record.where}: a VQA record needs exactly {NUM_VQA_ANSWERS} answers, got {len(answers)}; "
                "fix the 'answers' list"
            )
        item.question = with_suffix(question_text(record, "vqa"), options.get("suffix"))
        item.target = [str(a) for a in answers]
        return item

    def score_output(self, item: Item, output: str, options: Mapping[str, Any], seed: int) -> dict[str, Any]:
        score = score_vqa(output, item.target, norm=options["norm"], where=item.where)
        return {"parsed": score.prediction, "accuracy": score.accuracy}

    def summarize(self, records: Records, options: Mapping[str, Any], iters: int, seed: int) -> TaskMetrics:
        return summarize_vqa(
            [r["accuracy"] for r in records],
            group_labels(records, "answer_type"),
            group_labels(records, "question_type"),
        )

    def parsers(self, options: Mapping[str, Any]) -> dict[str, str]:
        return {"vqa_norm": options["norm"]}


TYPE = VqaType()
