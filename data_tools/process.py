"""Per-record work that runs in worker processes: check, tokenize, verify and prepare the image.

JPEG and PNG files that are already 8-bit RGB or greyscale are passed through byte for byte; anything
else that decodes (CMYK, 16-bit, palette, alpha, other formats) is converted to RGB and re-encoded
(JPEG quality 95 when it was a JPEG, else lossless PNG).
"""

from __future__ import annotations

import io
import json
from dataclasses import dataclass
from pathlib import Path

from PIL import Image

from data_tools.model import ModelSpec
from data_tools.sequence import Outcome
from yivl.data.encode import SampleEncoder, decode_image, read_image_bytes
from yivl.data.reasons import SampleRejected
from yivl.data.records import parse_record

_PASS = {"JPEG": "jpg", "PNG": "png"}


@dataclass(frozen=True)
class Job:
    """Everything a worker needs, picklable: the model and where the images are."""

    model: ModelSpec
    image_folder: Path
    write: bool = True  # False for validate/stats: no output bytes are kept


_state: dict = {}


def init_worker(job: Job) -> None:
    """Pool initializer: load the tokenizer once per process."""
    _state["job"] = job
    _state["encoder"] = job.model.load(with_images=False)


def prepare_image(data: bytes, where: str, max_pixels: int) -> tuple[str, bytes, tuple[int, int], str]:
    """``(extension, bytes, (width, height), action)``; the image is fully decoded to catch damage."""
    rgb = decode_image(data, where, max_pixels)
    with Image.open(io.BytesIO(data)) as header:
        fmt, mode, info = header.format, header.mode, header.info
    if fmt in _PASS and mode in ("RGB", "L") and "transparency" not in info:
        return _PASS[fmt], data, rgb.size, "passed_through"
    buf = io.BytesIO()
    if fmt == "JPEG":
        rgb.save(buf, format="JPEG", quality=95)
        return "jpg", buf.getvalue(), rgb.size, "reencoded"
    rgb.save(buf, format="PNG", compress_level=6)
    return "png", buf.getvalue(), rgb.size, "reencoded"


@dataclass
class Item:
    """One input record: JSON bytes, and for shard input the image bytes (None = no image member)."""

    index: int
    raw: bytes
    key: str | None = None
    in_shard: bool = False
    image: bytes | None = None
    error: str | None = None  # why the record is rejected before it is read, with ``reason``
    reason: str = "shard_corrupt"


def convert_record(encoder: SampleEncoder, job: Job, item: Item) -> Outcome:
    """One record -> an accepted sample (shard members) or a rejected one with its reason."""
    key = item.key or f"{item.index:09d}"
    where = f"record {item.index}" if not item.in_shard else f"sample {key}"
    try:
        if item.error is not None:
            raise SampleRejected(item.reason, item.error)
        if item.in_shard and not item.raw:
            raise SampleRejected("sample_incomplete", f"{where}: no .json member")
        record = parse_record(item.raw, where)
        text = encoder.encode_text(record, where)
        members = {"json": json.dumps(record, ensure_ascii=False).encode("utf-8")}
        size, action = None, "text_only"
        if text.image is not None:
            data = _image_bytes(job, item, text.image, where)
            ext, image_bytes, size, action = prepare_image(data, where, encoder.max_pixels)
            members[ext] = image_bytes
    except SampleRejected as err:
        return Outcome(item.index, key, err.reason, err.detail)
    members = members if job.write else {}
    return Outcome(item.index, key, members=members, tokens=text.length, image_size=size, image_action=action)


def _image_bytes(job: Job, item: Item, name: str, where: str) -> bytes:
    if not item.in_shard:
        return read_image_bytes(job.image_folder / name, where)
    if item.image is None:
        raise SampleRejected("image_missing", f"{where}: the record names an image but the sample has none")
    return item.image


def guarded(fn, item: Item, *args) -> Outcome:
    """Run ``fn(*args)``; an unexpected exception becomes a reject (bad data must never stop a run)."""
    try:
        return fn(*args)
    except Exception as err:
        key = item.key or f"{item.index:09d}"
        return Outcome(item.index, key, "unexpected_error", f"{key}: {err!r}")


def convert_job(item: Item) -> Outcome:
    """Pool entry point for convert, validate and stats."""
    return guarded(convert_record, item, _state["encoder"], _state["job"], item)
