"""Published benchmark tables -> the project's task records: which columns each layout needs, which
task type it is scored as, and how a row becomes a record (question, choices, answer, hint, groups).

A layout is picked from the table's columns, narrowed by the benchmark's name (the task name, the
``benchmark`` option, or the file name) where columns alone are ambiguous: MME and POPE both hold
yes/no questions, MMBench, SEED-Bench and ScienceQA all hold lettered options.
"""

from __future__ import annotations

import ast
import string
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from yivl.errors import YivlError
from yivl.evaluation.tabular import is_missing

BENCHMARKS = {
    "mmbench": "mcq",
    "mme": "mme",
    "pope": "yesno",
    "seedbench": "mcq",
    "scienceqa": "mcq",
    "mmmu": "mcq",
    "hallusionbench": "yesno",
    "textvqa": "vqa",
    "vqav2": "vqa",
    "gqa": "vqa",
    "coco": "caption",
}
"""Benchmark name -> the task type it is scored as."""
BENCHMARK_OPTIONS: dict[str, dict[str, Any]] = {"mmmu": {"parser": "mmmu"}}
"""Task options a benchmark implies (an entry's own options win)."""
_NAME_HINTS = {
    "mmbench": ("mmbench",),
    "mme": ("mme",),
    "pope": ("pope",),
    "seedbench": ("seed",),
    "scienceqa": ("scienceqa", "sqa"),
    "mmmu": ("mmmu",),
    "hallusionbench": ("hallusion",),
    "textvqa": ("textvqa",),
    "vqav2": ("vqav2", "vqa_v2"),
    "gqa": ("gqa",),
    "coco": ("coco",),
}
MMBENCH_CIRCULAR_STRIDE = 1_000_000
"""VLMEvalKit's MMBench: the circular copies of question i have index i + k * 1e6 (``g_index``)."""
NUM_VQA_ANSWERS = 10

Row = Mapping[str, Any]


@dataclass(frozen=True)
class Layout:
    """One published table layout: its columns (required), its id and image columns, and the
    row -> record conversion (the record holds no image; the reader adds it)."""

    benchmark: str
    format: str  # tsv | parquet
    columns: tuple[str, ...]
    convert: Callable[[Row, str], dict[str, Any]]
    id_column: str | None = None  # None: the row's position in the table
    image_column: str | None = "image"

    @property
    def type(self) -> str:
        return BENCHMARKS[self.benchmark]


def _text(row: Row, column: str, where: str) -> str:
    value = row.get(column)
    if is_missing(value):
        raise YivlError(f"{where}: the {column!r} cell is empty; every row needs one")
    return str(value)


def _optional(row: Row, column: str) -> str | None:
    value = row.get(column)
    return None if is_missing(value) else str(value)


def _groups(row: Row, **columns: str) -> dict[str, str]:
    """Record group fields (category, split, ...) from the named columns, where the cell is not empty."""
    return {key: str(row[col]) for key, col in columns.items() if not is_missing(row.get(col))}


def _letter_options(row: Row) -> list[str]:
    """Options in columns A, B, C... up to the first empty one (VLMEvalKit drops NaN options)."""
    options = []
    for letter in string.ascii_uppercase:
        if is_missing(row.get(letter)):
            break
        options.append(str(row[letter]))
    return options


def vlmeval_mcq(row: Row, where: str) -> dict[str, Any]:
    """VLMEvalKit / lmms-lab MMBench-style MCQ: ``A``-``I`` option columns, a letter ``answer``."""
    record = {"question": _text(row, "question", where), "choices": _letter_options(row)}
    record["answer"] = _text(row, "answer", where).strip()
    hint = _optional(row, "hint")
    if hint is not None:
        record["hint"] = hint
    return record | _groups(row, category="category", split="split")


def mmbench(row: Row, where: str) -> dict[str, Any]:
    record = vlmeval_mcq(row, where)
    record["pair_id"] = str(int(float(_text(row, "index", where))) % MMBENCH_CIRCULAR_STRIDE)
    return record


def vlmeval_mmmu(row: Row, where: str) -> dict[str, Any]:
    """VLMEvalKit's MMMU_DEV_VAL: a row without options is an open question."""
    record = vlmeval_mcq(row, where)
    if not record["choices"]:
        record = {k: v for k, v in record.items() if k != "choices"} | {"question_type": "open"}
    return record


def lmms_mmmu(row: Row, where: str) -> dict[str, Any]:
    """lmms-lab/MMMU: ``options`` is a Python list literal, ``question_type`` open or multiple-choice."""
    record = {"question": _text(row, "question", where), "answer": _text(row, "answer", where)}
    if row.get("question_type") == "open":
        return record | {"question_type": "open"}
    try:
        options = ast.literal_eval(_text(row, "options", where))
    except (ValueError, SyntaxError):
        raise YivlError(
            f"{where}: the 'options' cell is not a list literal; give the file as published"
        ) from None
    return record | {"choices": [str(o) for o in options]} | _groups(row, category="subfield")


def yesno(row: Row, where: str) -> dict[str, Any]:
    """POPE / HallusionBench: ``answer`` yes/no; ``category`` is the split (adversarial, popular...)."""
    record = {"question": _text(row, "question", where), "answer": _text(row, "answer", where)}
    return record | _groups(row, category="category")


def mme(row: Row, where: str) -> dict[str, Any]:
    """MME pairs its two questions per image by ``image_path`` (VLMEvalKit) or ``question_id`` (lmms-lab)."""
    record = yesno(row, where)
    for column in ("image_path", "question_id"):
        if not is_missing(row.get(column)):
            return record | {"pair_id": str(row[column])}
    return record  # paired by image (the row that holds the image, for VLMEvalKit's references)


def scienceqa_lmms(row: Row, where: str) -> dict[str, Any]:
    """lmms-lab/ScienceQA-IMG: a ``choices`` list and a 0-based ``answer`` index."""
    choices = row.get("choices")
    if not isinstance(choices, list):
        raise YivlError(f"{where}: the 'choices' cell must be a list of option texts")
    record = {"question": _text(row, "question", where), "choices": [str(c) for c in choices]}
    record["answer"] = row.get("answer")
    hint = _optional(row, "hint")
    return record | ({"hint": hint} if hint else {}) | _groups(row, category="category")


def seedbench_lmms(row: Row, where: str) -> dict[str, Any]:
    """lmms-lab/SEED-Bench: ``choice_a``-``choice_d``, a letter answer, ``data_type`` as the split."""
    choices = [_text(row, f"choice_{c}", where) for c in "abcd"]
    record = {"question": _text(row, "question", where), "choices": choices}
    return record | {"answer": _text(row, "answer", where).strip()} | _groups(row, split="data_type")


def vqa_answers(row: Row, where: str) -> dict[str, Any]:
    """TextVQA (a list of 10 strings) and VQAv2 (a list of ``{answer, answer_confidence, answer_id}``)."""
    answers = row.get("answers")
    if not isinstance(answers, list):
        raise YivlError(
            f"{where}: the 'answers' cell is empty; a test split has no answers to score, give the val split"
        )
    texts = [a.get("answer") if isinstance(a, dict) else a for a in answers]
    record = {"question": _text(row, "question", where), "answers": [str(t) for t in texts]}
    return record | _groups(row, answer_type="answer_type", question_type="question_type")


def gqa(row: Row, where: str) -> dict[str, Any]:
    """GQA's one answer as all ten references: VQA accuracy is then exact match after normalisation."""
    answer = _text(row, "answer", where)
    return {"question": _text(row, "question", where), "answers": [answer] * NUM_VQA_ANSWERS}


def coco(row: Row, where: str) -> dict[str, Any]:
    """lmms-lab/COCO-Caption2017: ``answer`` holds the reference captions (5 per image)."""
    captions = row.get("answer")
    if not isinstance(captions, list) or not captions:
        raise YivlError(f"{where}: the 'answer' cell must be the list of reference captions")
    record: dict[str, Any] = {"captions": [str(c) for c in captions]}
    question = _optional(row, "question")
    return record | ({"question": question} if question else {})


_FORMATS = {"tsv": "TSV", "parquet": "Parquet"}
_VLMEVAL = "VLMEvalKit TSV"
_LMMS = "lmms-eval Parquet"
LAYOUTS = (
    Layout("mmbench", "tsv", ("index", "question", "hint", "A", "B", "answer", "image"), mmbench, "index"),
    Layout("seedbench", "tsv", ("index", "question", "A", "B", "answer", "image"), vlmeval_mcq, "index"),
    Layout(
        "scienceqa", "tsv", ("index", "question", "hint", "A", "B", "answer", "image"), vlmeval_mcq, "index"
    ),
    Layout("mmmu", "tsv", ("index", "question", "A", "answer", "image"), vlmeval_mmmu, "index"),
    Layout("mme", "tsv", ("index", "image", "question", "answer", "category"), mme, "index"),
    Layout("pope", "tsv", ("index", "image", "question", "answer", "category"), yesno, "index"),
    Layout(
        "hallusionbench",
        "tsv",
        ("index", "image", "question", "answer", "category", "l2-category"),
        yesno,
        "index",
    ),
    Layout(
        "mmbench", "parquet", ("index", "question", "hint", "A", "B", "answer", "image"), mmbench, "index"
    ),
    Layout("mme", "parquet", ("question_id", "image", "question", "answer", "category"), mme),
    Layout("pope", "parquet", ("question_id", "image", "question", "answer", "category"), yesno),
    Layout("scienceqa", "parquet", ("image", "question", "choices", "answer", "hint"), scienceqa_lmms),
    Layout(
        "seedbench",
        "parquet",
        ("question_id", "question", "choice_a", "choice_b", "choice_c", "choice_d", "answer", "image"),
        seedbench_lmms,
        "question_id",
    ),
    Layout("mmmu", "parquet", ("id", "question", "options", "answer", "image_1"), lmms_mmmu, "id", "image_1"),
    Layout("textvqa", "parquet", ("question_id", "question", "image", "answers"), vqa_answers, "question_id"),
    Layout("vqav2", "parquet", ("question_id", "question", "image", "answers"), vqa_answers, "question_id"),
    Layout("gqa", "parquet", ("id", "imageId", "question", "answer"), gqa, "id", None),
    Layout("coco", "parquet", ("question_id", "image", "answer"), coco, "question_id"),
)


def source_name(layout: Layout) -> str:
    return _VLMEVAL if layout.format == "tsv" else _LMMS


def pick_layout(
    where: str, fmt: str, columns: list[str], kind: str, benchmark: str | None, hints: list[str]
) -> Layout:
    """The layout that fits ``columns`` for a task of type ``kind``; the benchmark name or the hints
    (task name, file name) settle ties. One-line YivlError naming the columns found and expected."""
    found = set(columns)
    same_type = [lay for lay in LAYOUTS if lay.format == fmt and lay.type == kind]
    if benchmark is not None:
        same_type = [lay for lay in same_type if lay.benchmark == benchmark]
    fits = [lay for lay in same_type if set(lay.columns) <= found]
    if len(fits) > 1:
        text = " ".join(hints).lower()
        named = [lay for lay in fits if any(h in text for h in _NAME_HINTS[lay.benchmark])]
        fits = named or fits
    if len(fits) == 1:
        return fits[0]
    if fits:
        names = sorted({lay.benchmark for lay in fits})
        raise YivlError(
            f"{where}: the columns fit the layouts of {', '.join(names)}; name the benchmark, e.g. "
            f"{names[0]}:PATH or {{benchmark: {names[0]}, path: PATH}}"
        )
    expected = "; ".join(f"{lay.benchmark}: {', '.join(lay.columns)}" for lay in same_type) or "none"
    raise YivlError(
        f"{where}: unknown {_FORMATS[fmt]} layout for task type {kind}; columns found: {', '.join(columns)}; "
        f"expected ({source_name(same_type[0]) if same_type else fmt}) {expected}"
    )
