"""Reading task files: JSONL (or a JSON array), or WebDataset ``.tar`` shards, from local paths only.

Image paths in JSONL records are relative to the task's image folder (default: the file's folder) and
must stay inside it. A shard sample is ``KEY.json`` (the record) plus an optional
``KEY.jpg|jpeg|png|webp``; shard images are read later, by byte offset, in the DataLoader workers, so
a large shard is never held in memory. Benchmark tables (TSV, Parquet) are read by ``benchmarks``;
their images arrive as bytes (``ImageRef.data``).
"""

from __future__ import annotations

import hashlib
import json
import tarfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from yivl.data.image_files import (
    DEFAULT_MAX_IMAGE_BYTES,
    check_image_size,
    read_image_file,
    resolve_image_path,
)
from yivl.data.records import DEFAULT_MAX_RECORD_BYTES, RecordFile
from yivl.errors import YivlError

IMAGE_EXTENSIONS = ("jpg", "jpeg", "png", "webp")


@dataclass(frozen=True)
class ImageRef:
    """Where one image lives: a file, ``size`` bytes at ``offset`` inside a tar shard, or ``data`` itself
    (an image cell of a benchmark table, already decoded and checked against ``max_image_bytes``)."""

    path: str
    offset: int = -1
    size: int = -1
    name: str = ""
    max_bytes: int = DEFAULT_MAX_IMAGE_BYTES
    data: bytes | None = None

    def read(self) -> bytes:
        """The image's bytes, at most ``max_bytes`` (YivlError when it cannot be read)."""
        if self.data is not None:
            return self.data
        if self.offset < 0:
            return read_image_file(self.path, self.display(), self.max_bytes)
        check_image_size(self.size, self.display(), self.max_bytes)
        try:
            with open(self.path, "rb") as f:
                f.seek(self.offset)
                return f.read(self.size)
        except OSError as err:
            raise YivlError(f"cannot read image {self.display()} ({err.strerror}); check the file") from None

    def display(self) -> str:
        """The name written into sample records."""
        return self.name or self.path


@dataclass
class RawRecord:
    """One task record as read: position in the file, id, location for messages, the JSON object."""

    index: int
    id: str
    where: str
    data: dict[str, Any]
    image: ImageRef | None
    num_images: int


@dataclass(frozen=True)
class ImageFiles:
    """How image paths of JSON records are resolved: against ``folder`` (None: the task file's folder),
    contained in it unless ``allow_outside``, each file at most ``max_bytes``."""

    folder: Path | None = None
    allow_outside: bool = False
    max_bytes: int = DEFAULT_MAX_IMAGE_BYTES


DEFAULT_IMAGE_FILES = ImageFiles()


def read_task_file(
    path: str | Path,
    limit: int | None = None,
    images: ImageFiles = DEFAULT_IMAGE_FILES,
    max_record_bytes: int = DEFAULT_MAX_RECORD_BYTES,
) -> list[RawRecord]:
    """Records of a JSONL file, a JSON array file, a ``.tar`` shard or a folder of shards, in order.

    ``limit`` keeps the first N records. Missing or malformed files, non-object records, records over
    ``max_record_bytes`` (refused from their size, unread), duplicate ids and missing image files raise
    a one-line YivlError naming the file and line.
    """
    path = Path(path).expanduser()
    if not path.exists():
        raise YivlError(f"task file not found: {path}; give a JSONL file or a folder of .tar shards")
    if path.is_dir():
        shards = sorted(path.glob("*.tar"))
        if not shards:
            raise YivlError(
                f"{path} holds no .tar shards; give a JSONL file or a folder of WebDataset shards"
            )
        records = [r for shard in shards for r in _read_shard(shard, images, max_record_bytes)]
    elif path.suffix == ".tar":
        records = _read_shard(path, images, max_record_bytes)
    else:
        records = _read_json_lines(path, images, max_record_bytes)
    if not records:
        raise YivlError(f"{path} holds no records; add one JSON object per line")
    return finish_records(records, limit)


def finish_records(records: list[RawRecord], limit: int | None) -> list[RawRecord]:
    """The first ``limit`` records, ids checked unique, numbered by position."""
    records = records[:limit] if limit is not None else records
    _check_unique_ids(records)
    for i, record in enumerate(records):
        record.index = i
    return records


def _read_json_lines(path: Path, images: ImageFiles, max_record_bytes: int) -> list[RawRecord]:
    """JSONL (one object per line, blank lines skipped) or a JSON array (LLaVA training files).

    The file is indexed by :class:`~yivl.data.records.RecordFile`, as training reads it: a damaged JSON
    array is refused with its line and byte offset, and a record is read only once its size is known.
    """
    index = RecordFile(path)
    as_list = index.is_json_list
    lines = None if as_list else index.line_numbers()
    out = []
    for i in range(len(index)):
        where = f"{path}[{i}]" if as_list else f"{path}:{lines[i]}"
        size = int(index.sizes[i])
        if size > max_record_bytes:
            raise YivlError(
                f"{where}: the record is {size} bytes, over max_record_bytes={max_record_bytes}; "
                "drop it or raise max_record_bytes"
            )
        try:
            text = index.raw(i).decode("utf-8")
        except UnicodeDecodeError:
            raise YivlError(f"{where}: not UTF-8 text; re-export the file as UTF-8") from None
        number = i + 1 if as_list else int(lines[i])
        out.append(_record(_parse(text, where), where, path.parent, images, number))
    return out


def _parse(text: str, where: str) -> Any:
    try:
        return json.loads(text)
    except json.JSONDecodeError as err:
        raise YivlError(f"{where}: not valid JSON ({err.msg} at column {err.colno}); fix the line") from None


def _record(data: Any, where: str, file_folder: Path, images: ImageFiles, number: int) -> RawRecord:
    """A file record: its first image path resolved (``resolve_image``) against the image folder."""
    if not isinstance(data, dict):
        raise YivlError(f"{where}: a record must be a JSON object, got {type(data).__name__}")
    names = _image_names(data, where)
    image = None
    if names:
        folder = images.folder if images.folder is not None else file_folder
        file = resolve_image(folder, names[0], where, images)
        image = ImageRef(str(file), name=names[0], max_bytes=images.max_bytes)
    return RawRecord(0, _record_id(data, str(number), where), where, data, image, len(names))


def resolve_image(folder: Path, name: str, where: str, images: ImageFiles) -> Path:
    """``name`` inside ``folder``: resolved, contained (unless allowed outside), a regular file within
    the byte limit; the same rules as the data tools (:mod:`yivl.data.image_files`)."""
    path = resolve_image_path(folder.expanduser(), name, where, images.allow_outside)
    try:
        st = path.stat()
    except OSError:
        raise YivlError(
            f"{where}: image {name} not found (looked for {path}); fix the 'image' path"
        ) from None
    if not path.is_file():
        raise YivlError(f"{where}: image {name} ({path}) is not a regular file; fix the 'image' path")
    check_image_size(st.st_size, where, images.max_bytes)
    return path


def _image_names(data: dict, where: str) -> list[str]:
    """The record's ``image`` field as a list of paths (empty for text-only records)."""
    image = data.get("image")
    if image is None:
        return []
    names = image if isinstance(image, list) else [image]
    if not all(isinstance(n, str) and n.strip() for n in names):
        raise YivlError(f"{where}: 'image' must be a path or a list of paths, got {image!r}")
    return names


def _record_id(data: dict, default: str, where: str) -> str:
    raw = data.get("id", data.get("question_id", default))
    if not isinstance(raw, str | int) or isinstance(raw, bool):
        raise YivlError(f"{where}: 'id' must be a string or an integer, got {raw!r}")
    return str(raw)


def _read_shard(shard: Path, images: ImageFiles, max_record_bytes: int) -> list[RawRecord]:
    """Samples of one WebDataset shard in member order: ``KEY.json`` + optional ``KEY.<image ext>``."""
    samples: dict[str, dict[str, tarfile.TarInfo]] = {}
    try:
        with tarfile.open(shard, "r:") as tar:
            members = [m for m in tar.getmembers() if m.isfile()]
            for member in members:
                base = member.name.rsplit("/", 1)[-1]
                key, _, ext = base.partition(".")
                prefix = member.name[: len(member.name) - len(base)]
                samples.setdefault(prefix + key, {})[ext.lower()] = member
            return [
                _shard_record(tar, shard, key, parts, images.max_bytes, max_record_bytes)
                for key, parts in samples.items()
            ]
    except (tarfile.TarError, OSError) as err:
        raise YivlError(f"{shard} is not a readable tar shard ({err}); rewrite the shard") from None


def _shard_record(
    tar: tarfile.TarFile,
    shard: Path,
    key: str,
    parts: dict[str, tarfile.TarInfo],
    max_bytes: int,
    max_record_bytes: int,
) -> RawRecord:
    where = f"{shard}:{key}"
    if "json" not in parts:
        raise YivlError(f"{where}: the sample has no {key}.json record; every sample needs one")
    if parts["json"].size > max_record_bytes:
        raise YivlError(
            f"{where}: {key}.json is {parts['json'].size} bytes, over max_record_bytes={max_record_bytes}; "
            "drop it or raise max_record_bytes"
        )
    handle = tar.extractfile(parts["json"])
    data = _parse(handle.read().decode("utf-8", errors="replace"), where) if handle else None
    if not isinstance(data, dict):
        raise YivlError(f"{where}: {key}.json must hold a JSON object")
    ext = next((e for e in IMAGE_EXTENSIONS if e in parts), None)
    image = None
    if ext is not None:
        member = parts[ext]
        name = f"{shard.name}:{member.name}"
        image = ImageRef(str(shard), member.offset_data, member.size, name, max_bytes)
    elif data.get("image") is not None:
        raise YivlError(f"{where}: the record names an image but the shard has no {key}.jpg/.png/.webp")
    return RawRecord(0, _record_id(data, key, where), where, data, image, int(image is not None))


def _check_unique_ids(records: list[RawRecord]) -> None:
    seen: dict[str, str] = {}
    for record in records:
        if record.id in seen:
            raise YivlError(
                f"{record.where}: id {record.id!r} was already used at {seen[record.id]}; ids must be unique"
            )
        seen[record.id] = record.where


def dataset_fingerprint(records: list[RawRecord]) -> str:
    """sha256 over the records in order (canonical JSON of each) and their image names."""
    digest = hashlib.sha256()
    for record in records:
        image = record.image.display() if record.image else ""
        digest.update(json.dumps([record.id, image, record.data], sort_keys=True, default=str).encode())
        if record.image is not None and record.image.data is not None:
            digest.update(hashlib.sha256(record.image.data).digest())  # a table's image is part of the record
        digest.update(b"\n")
    return digest.hexdigest()
