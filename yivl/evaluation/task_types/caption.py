"""``caption``: one generated caption per image, scored over the corpus (BLEU-1..4, CIDEr-D, ROUGE-L)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from yivl.constants import IMAGE_PLACEHOLDER
from yivl.errors import YivlError
from yivl.evaluation.items import LLAVA_IMAGE_TOKEN, Item, base_item
from yivl.evaluation.metrics import CAPTION_TOKENIZERS, TaskMetrics, score_captions
from yivl.evaluation.sources import RawRecord
from yivl.evaluation.task_types.base import GenerationOptions, Records, TaskType, choice, column


@dataclass(frozen=True)
class CaptionOptions(GenerationOptions):
    max_new_tokens: int = 64
    prompt: str = "Provide a one-sentence caption for the provided image."
    tokenizer: str = choice("python", *CAPTION_TOKENIZERS)
    jar: str | None = None


class CaptionType(TaskType):
    name = "caption"
    Options = CaptionOptions
    display = ("bleu_1", "bleu_2", "bleu_3", "bleu_4", "cider", "rouge_l")

    def build_item(self, record: RawRecord, options: Mapping[str, Any]) -> Item:
        item = base_item(record)
        refs = record.data.get("captions")
        if not isinstance(refs, list) or not refs or not all(isinstance(r, str) for r in refs):
            raise YivlError(f"{record.where}: a caption record needs a non-empty 'captions' list of strings")
        if record.image is None:
            raise YivlError(f"{record.where}: a caption record needs an 'image'")
        question = record.data.get("question") or options.get("prompt")
        item.question = str(question).replace(LLAVA_IMAGE_TOKEN, IMAGE_PLACEHOLDER)
        item.target = refs
        return item

    def summarize(self, records: Records, options: Mapping[str, Any], iters: int, seed: int) -> TaskMetrics:
        refs, hyps = column(records, "target"), column(records, "raw_output")
        return score_captions(hyps, refs, options["tokenizer"], options.get("jar"), iters, seed).metrics

    def parsers(self, options: Mapping[str, Any]) -> dict[str, str]:
        return {"caption_tokenizer": options["tokenizer"]}


TYPE = CaptionType()
