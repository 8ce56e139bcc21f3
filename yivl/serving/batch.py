"""infer.py mode=batch: a JSONL file of questions -> a JSONL file of answers, nothing lost.

Every non-blank input line gives exactly one output line, in input order: its ``answer``, or an
``error`` with a ``reason`` code. A bad record never stops the run. The output is written to
``<output>.partial`` (flushed after every batch) and renamed to ``<output>`` after the last line, so
``<output>`` only ever exists complete.
"""

from __future__ import annotations

import json
import os
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from itertools import islice
from pathlib import Path
from typing import IO

from omegaconf import DictConfig
from PIL import Image

from yivl.config.schema import check
from yivl.config.schemas import INFER
from yivl.data.chat import Turn
from yivl.data.image_files import read_image_file
from yivl.data.images import load_image
from yivl.errors import YivlError
from yivl.models.generation import GenerationSettings
from yivl.progress import progress_bar
from yivl.serving.engine import Engine, Request

REASONS = {
    "record_too_large": "the line is longer than batch.max_record_bytes",
    "malformed_json": "the line is not valid JSON (or not UTF-8)",
    "record_not_object": "the line is JSON but not an object",
    "question_missing": "no non-empty 'question' string",
    "image_invalid": "'image' is neither a non-empty path string nor null",
    "image_outside_folder": "the image path leads outside batch.image_folder",
    "image_unreadable": "the image is missing, not a file, not an image, damaged or too large",
    "prompt_invalid": "the question cannot be made into a Yi-VL prompt",
    "prompt_too_long": "the prompt does not fit the model's context",
    "generation_failed": "generation refused the batch the record was in",
}
"""The ``reason`` of an error line, and what it means (docs/inference.md lists them)."""


class RecordError(YivlError):
    """One record cannot be answered: ``reason`` (a key of REASONS) and a message naming the problem."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


@dataclass
class Row:
    """One non-blank input line: its number, and the output record being built for it."""

    line: int
    result: dict = field(default_factory=dict)
    request: Request | None = None


@dataclass(frozen=True)
class BatchOptions:
    """``cfg.batch`` as checked values."""

    source: Path
    output: Path
    image_folder: Path
    batch_size: int
    max_record_bytes: int
    allow_images_outside_folder: bool
    max_image_bytes: int


def batch_options(cfg: DictConfig) -> BatchOptions:
    """Check ``cfg.batch``; YivlError naming the first bad value."""
    batch = cfg.batch
    src = Path(batch.input).expanduser() if batch.input else None
    if src is None or not src.is_file():
        raise YivlError(f"batch.input={batch.input} is not a file; give batch.input=questions.jsonl")
    dst = Path(batch.output).expanduser() if batch.output else src.with_suffix(".answers.jsonl")
    if dst.resolve() == src.resolve():
        raise YivlError(f"batch.output={dst} is the input file; give another batch.output=")
    folder = Path(batch.image_folder).expanduser() if batch.image_folder else src.parent
    if not folder.is_dir():
        raise YivlError(f"batch.image_folder={batch.image_folder} is not a folder; give the images' folder")
    check(cfg, INFER, section="batch")
    return BatchOptions(
        src,
        dst,
        folder.resolve(),
        batch.batch_size,
        batch.max_record_bytes,
        bool(batch.allow_images_outside_folder),
        batch.max_image_bytes,
    )


def run_batch(cfg: DictConfig, engine: Engine, settings: GenerationSettings) -> None:
    """Answer every line of ``batch.input`` (JSONL: question, optional image, optional id) into a JSONL."""
    opts = batch_options(cfg)
    total = sum(1 for _ in read_lines(opts.source, opts.max_record_bytes))
    partial = opts.output.with_name(opts.output.name + ".partial")
    outcomes: Counter[str] = Counter()
    lines = read_lines(opts.source, opts.max_record_bytes)
    with partial.open("w", encoding="utf-8") as out, progress_bar("answering", total) as bar:
        while chunk := list(islice(lines, opts.batch_size)):
            rows = [prepare(lineno, raw, engine, opts) for lineno, raw in chunk]
            answer_rows(engine, settings, rows)
            _write(out, rows, outcomes)
            bar.advance(len(rows))
    os.replace(partial, opts.output)
    answered = outcomes.pop("answered", 0)
    reasons = ", ".join(f"{reason} {n}" for reason, n in sorted(outcomes.items()))
    failed = sum(outcomes.values())
    detail = f" ({reasons})" if reasons else ""
    print(f"{answered} answered, {failed} failed{detail}, {total} lines -> {opts.output}")


def _write(out: IO[str], rows: list[Row], outcomes: Counter[str]) -> None:
    for row in rows:
        out.write(json.dumps(row.result, ensure_ascii=False) + "\n")
        outcomes[row.result.get("reason", "answered")] += 1
    out.flush()


def read_lines(path: Path, max_bytes: int) -> Iterator[tuple[int, bytes | None]]:
    """(line number, raw bytes) of each non-blank line; ``None`` for a line over ``max_bytes``."""
    with path.open("rb") as f:
        lineno = 0
        while raw := f.readline(max_bytes + 1):
            lineno += 1
            if len(raw) > max_bytes and not raw.endswith(b"\n"):
                while (rest := f.readline(1 << 20)) and not rest.endswith(b"\n"):
                    pass  # skip the rest of the over-long line in bounded reads
                yield lineno, None
            elif raw.strip():
                yield lineno, raw


def decode_record(raw: bytes | None, max_bytes: int) -> dict:
    """The JSON object of one line; RecordError when the line is not one."""
    if raw is None:
        raise RecordError("record_too_large", f"the line is over batch.max_record_bytes={max_bytes} bytes")
    try:
        record = json.loads(raw.decode("utf-8").removeprefix("\ufeff"))  # a BOM from Windows editors
    except UnicodeDecodeError:
        raise RecordError("malformed_json", "malformed JSON: the line is not UTF-8 text") from None
    except json.JSONDecodeError as exc:
        raise RecordError("malformed_json", f"malformed JSON: {exc.msg} (column {exc.colno})") from None
    if not isinstance(record, dict):
        raise RecordError("record_not_object", f"the line is a JSON {type(record).__name__}, not an object")
    return record


def check_record(record: dict) -> None:
    """RecordError when the object has no usable question or a malformed image field."""
    question = record.get("question")
    if not isinstance(question, str) or not question.strip():
        raise RecordError("question_missing", "record has no non-empty 'question' string")
    image = record.get("image")
    if image is not None and (not isinstance(image, str) or not image.strip()):
        raise RecordError(
            "image_invalid", f"'image' must be a path string or null (text only), not {json.dumps(image)}"
        )


def image_path(image: str, opts: BatchOptions) -> Path:
    """The record's image under ``opts.image_folder``, resolved; RecordError when it leads outside."""
    path = (opts.image_folder / image).resolve()
    if not opts.allow_images_outside_folder and not path.is_relative_to(opts.image_folder):
        raise RecordError(
            "image_outside_folder",
            f"image {image!r} is outside {opts.image_folder}; move it there or set "
            "batch.allow_images_outside_folder=true",
        )
    return path


def prepare(lineno: int, raw: bytes | None, engine: Engine, opts: BatchOptions) -> Row:
    """Parse one line into a ready request (image decoded once), or an error result."""
    row = Row(lineno, {"line": lineno, "id": lineno})
    try:
        record = decode_record(raw, opts.max_record_bytes)
        row.result["id"] = record.get("id", lineno)
        check_record(record)
        row.result["question"] = record["question"]
        image: Image.Image | None = None
        if record.get("image") is not None:
            row.result["image"] = record["image"]
            image = _load(image_path(record["image"], opts), engine, opts.max_image_bytes)
        row.request = Request([Turn("human", record["question"])], image=image)
        _check_prompt(engine, row.request)
    except RecordError as exc:
        row.result.update(error=str(exc), reason=exc.reason)
        row.request = None
    return row


def _load(path: Path, engine: Engine, max_bytes: int) -> Image.Image:
    """The image, read as the data tools read one: a regular file of at most ``max_bytes``, unblocking."""
    try:
        return load_image(read_image_file(path, str(path), max_bytes), max_pixels=engine.max_image_pixels)
    except YivlError as exc:
        raise RecordError("image_unreadable", str(exc)) from None


def _check_prompt(engine: Engine, request: Request) -> None:
    try:
        ids = engine.prompt_ids(request.turns, request.image is not None)
    except YivlError as exc:
        raise RecordError("prompt_invalid", str(exc)) from None
    length = engine.prompt_length(ids)
    if length >= engine.context_length:
        raise RecordError(
            "prompt_too_long",
            f"the prompt is {length} tokens (image features included) but the model's context is "
            f"{engine.context_length}; shorten the question",
        )


def answer_rows(engine: Engine, settings: GenerationSettings, rows: list[Row]) -> None:
    """Generate the answers of the rows that have a request, in one batch."""
    ready = [row for row in rows if row.request is not None]
    if not ready:
        return
    try:
        answers = engine.generate([row.request for row in ready], settings)
    except YivlError as exc:
        for row in ready:
            row.result.update(error=str(exc), reason="generation_failed")
        return
    for row, answer in zip(ready, answers, strict=True):
        row.result["answer"] = answer
