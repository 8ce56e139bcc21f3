"""Per-record work that runs in worker processes: check, tokenize, verify and prepare the image.

Image paths are resolved inside the image folder and read bounded (:mod:`yivl.data.image_files`).
JPEG and PNG files that are already 8-bit RGB or greyscale are passed through byte for byte, less any
bytes after the image's end (``trimmed``); anything else that decodes (CMYK, 16-bit, palette, alpha,
other formats, an end that cannot be found) is converted to RGB and re-encoded (JPEG quality 95 when it
was a JPEG, else lossless PNG).
"""

from __future__ import annotations

import io
import json
import os
import signal
from dataclasses import dataclass
from pathlib import Path

from PIL import Image

from data_tools.image_end import image_end
from data_tools.model import ModelSpec
from data_tools.sequence import Outcome
from yivl.data.encode import SampleEncoder, decode_image, read_image_bytes
from yivl.data.image_files import DEFAULT_MAX_IMAGE_BYTES, check_image_size, resolve_image_path
from yivl.data.reasons import SampleRejected
from yivl.data.records import parse_record

_PASS = {"JPEG": "jpg", "PNG": "png"}


@dataclass(frozen=True)
class Job:
    """Everything a worker needs, picklable: the model, where the images are and how big they may be."""

    model: ModelSpec
    image_folder: Path
    write: bool = True  # False for validate/stats: no output bytes are kept
    max_image_bytes: int = DEFAULT_MAX_IMAGE_BYTES
    allow_outside: bool = False  # --allow-images-outside-folder


_state: dict = {}


def init_worker(job: Job) -> None:
    """Pool initializer: load the tokenizer once per process."""
    _state["job"] = job
    _state["encoder"] = job.model.load(with_images=False)


def prepare_image(
    data: bytes, where: str, max_pixels: int, max_bytes: int = DEFAULT_MAX_IMAGE_BYTES
) -> tuple[str, bytes, tuple[int, int], str]:
    """``(extension, bytes, (width, height), action)``; the image is fully decoded to catch damage.

    ``action`` is ``passed_through``, ``trimmed`` (the bytes up to the image's end, without what
    trails it) or ``reencoded``.
    """
    check_image_size(len(data), where, max_bytes)
    rgb = decode_image(data, where, max_pixels)
    with Image.open(io.BytesIO(data)) as header:
        fmt, mode, info = header.format, header.mode, header.info
    if fmt in _PASS and mode in ("RGB", "L") and "transparency" not in info:
        end = image_end(data, fmt)
        if end == len(data):
            return _PASS[fmt], data, rgb.size, "passed_through"
        if end is not None and _decodes_same(data[:end], rgb, where, max_pixels):
            return _PASS[fmt], data[:end], rgb.size, "trimmed"
    return _reencode(rgb, fmt)


def _decodes_same(data: bytes, rgb: Image.Image, where: str, max_pixels: int) -> bool:
    """True when ``data`` (an image cut at its end) decodes to exactly the pixels of ``rgb``."""
    try:
        return decode_image(data, where, max_pixels).tobytes() == rgb.tobytes()
    except SampleRejected:
        return False


def _reencode(rgb: Image.Image, fmt: str | None) -> tuple[str, bytes, tuple[int, int], str]:
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
    has_image = False
    try:
        if item.error is not None:
            raise SampleRejected(item.reason, item.error)
        if item.in_shard and not item.raw:
            raise SampleRejected("sample_incomplete", f"{where}: no .json member")
        record = parse_record(item.raw, where)
        has_image = record.get("image") not in (None, "", [])
        text = encoder.encode_text(record, where)
        members = {"json": json.dumps(text.record, ensure_ascii=False).encode("utf-8")}
        size, action = None, "text_only"
        if text.image is not None:
            data = _image_bytes(job, item, text.image, where)
            ext, image_bytes, size, action = prepare_image(
                data, where, encoder.max_pixels, job.max_image_bytes
            )
            members[ext] = image_bytes
    except SampleRejected as err:
        return Outcome(item.index, key, err.reason, err.detail, has_image=has_image)
    members = members if job.write else {}
    return Outcome(
        item.index,
        key,
        members=members,
        tokens=text.length,
        image_size=size,
        image_action=action,
        repairs=text.repairs,
        has_image=text.image is not None,
    )


def _image_bytes(job: Job, item: Item, name: str, where: str) -> bytes:
    if not item.in_shard:
        path = resolve_image_path(job.image_folder, name, where, job.allow_outside)
        return read_image_bytes(path, where, job.max_image_bytes)
    if item.image is None:
        raise SampleRejected("image_missing", f"{where}: the record names an image but the sample has none")
    check_image_size(len(item.image), where, job.max_image_bytes)
    return item.image


def guarded(fn, item: Item, *args) -> Outcome:
    """Run ``fn(*args)``; an unexpected exception becomes a reject (bad data must never stop a run)."""
    try:
        return fn(*args)
    except Exception as err:
        key = item.key or f"{item.index:09d}"
        return Outcome(item.index, key, "unexpected_error", f"{key}: {err!r}")


def _crash_point(index: int) -> None:
    """Test hook: ``YIVL_DATA_TOOLS_WORKER_CRASH=<n>`` SIGKILLs the worker that takes record ``n``
    (as the out-of-memory killer would)."""
    if os.environ.get("YIVL_DATA_TOOLS_WORKER_CRASH") == str(index):
        os.kill(os.getpid(), signal.SIGKILL)


def convert_job(item: Item) -> Outcome:
    """Pool entry point for convert, validate and stats."""
    _crash_point(item.index)
    return guarded(convert_record, item, _state["encoder"], _state["job"], item)
