"""Task records -> evaluation items: field checks per task type, the question text with its suffix,
and the normalised target. Nothing here needs the model; prompts are rendered later (``prompting``).
"""

from __future__ import annotations

import string
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from yivl.constants import IMAGE_PLACEHOLDER
from yivl.data.chat import Turn, turns_from_record
from yivl.data.checks import check_record
from yivl.data.formats import image_tokens, normalize_record
from yivl.errors import YivlError
from yivl.evaluation.metrics import choice_letters, normalize_label
from yivl.evaluation.sources import ImageRef, RawRecord

NUM_VQA_ANSWERS = 10
LLAVA_IMAGE_TOKEN = "<image>"


@dataclass
class Item:
    """One sample to evaluate.

    ``question``: the human message for generation (suffix included, no placeholder). ``target``: the
    normalised gold answer (JSON-able). ``meta``: groups and extras (answer_type, category, pair_id,
    split, choices...). ``turns``: the whole conversation (loss). ``cloze``/``continuations``: the
    likelihood context message and the option continuations (mcq).
    """

    index: int
    id: str
    where: str
    image: ImageRef | None
    question: str | None = None
    target: Any = None
    meta: dict[str, Any] = field(default_factory=dict)
    turns: list[Turn] | None = None
    cloze: str | None = None
    continuations: list[str] | None = None


def build_items(kind: str, records: list[RawRecord], options: Mapping[str, Any]) -> list[Item]:
    """Check every record for the fields ``kind`` needs and build its item (YivlError on a bad one)."""
    builder = _BUILDERS[kind]
    return [builder(record, options) for record in records]


def _base(record: RawRecord) -> Item:
    return Item(record.index, record.id, record.where, record.image, meta=_groups(record.data))


def _groups(data: Mapping[str, Any]) -> dict[str, Any]:
    keys = ("answer_type", "question_type", "category", "split", "pair_id")
    return {k: str(data[k]) for k in keys if data.get(k) is not None}


def _text(record: RawRecord, key: str, task: str) -> str:
    value = record.data.get(key)
    if not isinstance(value, str) or not value.strip():
        raise YivlError(f"{record.where}: a {task} record needs a non-empty string '{key}'")
    return value


def _question(record: RawRecord, task: str) -> str:
    """The record's question; a LLaVA ``<image>`` token becomes the Yi-VL placeholder."""
    text = _text(record, "question", task).replace(LLAVA_IMAGE_TOKEN, IMAGE_PLACEHOLDER)
    if IMAGE_PLACEHOLDER in text and record.image is None:
        raise YivlError(f"{record.where}: the question has an image placeholder but the record has no image")
    return text


def with_suffix(text: str, suffix: str | None) -> str:
    """``text`` + ``suffix`` unless it already ends with it."""
    if not suffix or text.endswith(suffix):
        return text
    return text + suffix


def _vqa(record: RawRecord, options: Mapping[str, Any]) -> Item:
    item = _base(record)
    answers = record.data.get("answers")
    if not isinstance(answers, list):
        raise YivlError(f"{record.where}: a vqa record needs an 'answers' list of {NUM_VQA_ANSWERS} strings")
    if len(answers) != NUM_VQA_ANSWERS:
        raise YivlError(
            f"{record.where}: a VQA record needs exactly {NUM_VQA_ANSWERS} answers, got {len(answers)}; "
            "fix the 'answers' list"
        )
    item.question = with_suffix(_question(record, "vqa"), options.get("suffix"))
    item.target = [str(a) for a in answers]
    return item


def _yesno(record: RawRecord, options: Mapping[str, Any]) -> Item:
    item = _base(record)
    item.question = with_suffix(_question(record, "yes/no"), options.get("suffix"))
    item.target = normalize_label(record.data.get("answer", ""), record.where)
    if "split" not in item.meta and "category" in item.meta:
        item.meta["split"] = item.meta["category"]  # POPE files name the split 'category'
    return item


def _mme(record: RawRecord, options: Mapping[str, Any]) -> Item:
    item = _yesno(record, options)
    item.meta.pop("split", None)
    if "category" not in item.meta:
        raise YivlError(f"{record.where}: an mme record needs a 'category' (its subtask, e.g. existence)")
    if "pair_id" not in item.meta:
        if record.image is None:
            raise YivlError(f"{record.where}: an mme record needs a 'pair_id' or an image to pair questions")
        item.meta["pair_id"] = record.image.display()
    return item


def _caption(record: RawRecord, options: Mapping[str, Any]) -> Item:
    item = _base(record)
    refs = record.data.get("captions")
    if not isinstance(refs, list) or not refs or not all(isinstance(r, str) for r in refs):
        raise YivlError(f"{record.where}: a caption record needs a non-empty 'captions' list of strings")
    if record.image is None:
        raise YivlError(f"{record.where}: a caption record needs an 'image'")
    question = record.data.get("question") or options.get("prompt")
    item.question = str(question).replace(LLAVA_IMAGE_TOKEN, IMAGE_PLACEHOLDER)
    item.target = refs
    return item


def _loss(record: RawRecord, options: Mapping[str, Any]) -> Item:
    item = _base(record)
    data = dict(record.data)
    if data.get("image") is not None and record.image is not None:
        data["image"] = record.image.display()
    tokens = image_tokens(options.get("image_tokens"), "task_options.loss.image_tokens")
    data = normalize_record(data, tokens).record  # LLaVA's <image>, placed as in training
    check_record(data, record.where, tokens)
    item.turns = turns_from_record(data, record.where)
    return item


def _mcq(record: RawRecord, options: Mapping[str, Any]) -> Item:
    item = _base(record)
    if options.get("parser") == "mmmu" and record.data.get("question_type") == "open":
        if options.get("mode") != "generate":
            raise YivlError(
                f"{record.where}: an open MMMU question has no options to score; use mode=generate"
            )
        return _mmmu_open(record, item)
    choices = record.data.get("choices", record.data.get("options"))
    if not isinstance(choices, list) or not all(isinstance(c, str | int | float) for c in choices):
        raise YivlError(f"{record.where}: an mcq record needs a 'choices' list of option texts")
    choices = [str(c) for c in choices]
    letters = choice_letters(len(choices))
    item.target = _answer_letter(record, choices, letters)
    item.meta["choices"] = choices
    question = _question(record, "mcq")
    item.question = mcq_prompt(question, choices, record.data.get("hint"), options)
    if options.get("likelihood_target") == "letter":
        item.cloze, item.continuations = item.question, list(letters)
    else:
        item.cloze, item.continuations = with_suffix(question, options.get("cloze_suffix")), choices
    return item


def _mmmu_open(record: RawRecord, item: Item) -> Item:
    answer = record.data.get("answer")
    golds = answer if isinstance(answer, list) else [answer]
    if not golds or not all(isinstance(g, str | int | float) for g in golds):
        raise YivlError(f"{record.where}: an open MMMU record needs an 'answer' (a string or a list)")
    item.question = with_suffix(_question(record, "mcq") + "\n", MMMU_OPEN_SUFFIX)
    item.target = [str(g) for g in golds]
    item.meta["open"] = True
    return item


MMMU_OPEN_SUFFIX = "\nAnswer the question using a single word or phrase."


def _answer_letter(record: RawRecord, choices: list[str], letters: list[str]) -> str:
    """The gold option as a letter: given as a letter, a 0-based index, or the option's exact text."""
    answer = record.data.get("answer")
    if isinstance(answer, int) and not isinstance(answer, bool) and 0 <= answer < len(choices):
        return letters[answer]
    if isinstance(answer, str):
        text = answer.strip()
        if text.upper() in letters and len(text) == 1:
            return text.upper()
        if text in choices:
            return letters[choices.index(text)]
    raise YivlError(
        f"{record.where}: mcq 'answer' {answer!r} is not one of the letters {''.join(letters)}, an option "
        "index or an option's text"
    )


def mcq_prompt(question: str, choices: list[str], hint: Any, options: Mapping[str, Any]) -> str:
    """LLaVA-1.5 style (``A. x`` lines) or, with ``parser=mmmu``, the official MMMU style (``(A) x``)."""
    letters = string.ascii_uppercase
    context = f"Context: {hint}\n" if isinstance(hint, str) and hint.strip() else ""
    if options.get("parser") == "mmmu":
        lines = "\n".join(f"({letters[i]}) {c}" for i, c in enumerate(choices))
        return with_suffix(f"{context}{question}\n\n{lines}\n", options.get("suffix"))
    lines = "\n".join(f"{letters[i]}. {c}" for i, c in enumerate(choices))
    return with_suffix(f"{context}{question}\n{lines}", options.get("suffix"))


_BUILDERS: dict[str, Callable[[RawRecord, Mapping[str, Any]], Item]] = {
    "vqa": _vqa,
    "mcq": _mcq,
    "yesno": _yesno,
    "mme": _mme,
    "caption": _caption,
    "loss": _loss,
}
