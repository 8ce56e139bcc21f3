"""Input readers for the tools: JSON/JSONL records, or the samples of local tar shards in order.

Shards are read as training reads them: conversation shards (``KEY.json`` records) as they are, caption
shards (img2dataset output or ``data_tools laion`` output: a ``KEY.txt`` caption, or a folder whose
manifest says ``laion``) as the one-turn caption conversations of :class:`yivl.data.sources.LaionShardSource`.
"""

from __future__ import annotations

import json
import tarfile
from collections.abc import Iterator
from pathlib import Path

from data_tools.process import Item
from yivl.data.captions import laion_record
from yivl.data.reasons import SampleRejected
from yivl.data.records import DEFAULT_MAX_RECORD_BYTES, RecordFile
from yivl.data.shards import expand_shards, image_member, read_manifest, read_tar_samples


def is_shard_input(path: Path | str) -> bool:
    """A folder, a .tar file or a brace pattern of tars (rather than a JSON/JSONL file)."""
    text = str(path)
    return Path(text).is_dir() or text.endswith(".tar") or "{" in text


def local_shards(spec: str) -> list[Path]:
    """Local shard files of a folder, pattern or ``::`` list, sorted as given."""
    return [Path(u) for u in expand_shards(spec)]


def tar_samples(shards: list[Path], max_record_bytes: int = DEFAULT_MAX_RECORD_BYTES) -> Iterator[dict]:
    """Samples of the shards in order; a ``.json`` or ``.txt`` member over ``max_record_bytes`` is left
    unread (see :func:`read_tar_samples`). A shard that cannot be read to its end yields one
    ``{"__error__": message}`` item after its readable samples (so it is accounted for)."""
    limits = {"json": max_record_bytes, "txt": max_record_bytes}
    for shard in shards:
        count = 0
        try:
            for sample in read_tar_samples(shard, limits):
                sample["__url__"] = str(shard)
                count += 1
                yield sample
        except (tarfile.TarError, OSError, EOFError) as err:
            yield {
                "__key__": shard.name,
                "__url__": str(shard),
                "__error__": f"{shard}: unreadable after {count} samples ({err})",
            }


def early_reject(sample: dict, where: str) -> tuple[str, str] | None:
    """``(reason, detail)`` for a sample rejected before its members are parsed: an unreadable shard, a
    misplaced member, or a record member over the byte limit."""
    if "__error__" in sample:
        return sample.get("__reason__", "shard_corrupt"), sample["__error__"]
    if "__oversized__" in sample:
        sizes = ", ".join(f".{ext} {size:,} bytes" for ext, size in sample["__oversized__"].items())
        return "record_too_large", f"{where}: {sizes}, over --max-record-bytes"
    return None


def conversation_items(
    input_path: Path, start: int = 0, max_record_bytes: int = DEFAULT_MAX_RECORD_BYTES
) -> tuple[int | None, Iterator[Item]]:
    """``(total or None when streaming shards, items)`` for the record tools, from index ``start``."""
    if is_shard_input(input_path):
        return None, _shard_items(local_shards(str(input_path)), start, max_record_bytes)
    records = RecordFile(input_path, max_record_bytes)
    return len(records), record_items(records, start)


def record_items(records: RecordFile, start: int = 0, stop: int | None = None) -> Iterator[Item]:
    """Items of a record file in ``[start, stop)``; a record over the byte limit is never read."""
    for i in range(start, len(records) if stop is None else stop):
        problem = records.size_problem(i)
        if problem is None:
            yield Item(i, records.raw(i))
        else:
            yield Item(i, b"", error=problem, reason="record_too_large")


def _shard_items(shards: list[Path], start: int, max_record_bytes: int) -> Iterator[Item]:
    caption_folders: dict[Path, bool] = {}
    for index, sample in enumerate(tar_samples(shards, max_record_bytes)):
        if index < start:
            continue
        url = Path(sample["__url__"])
        key = f"{url.name}:{sample['__key__']}"
        image = image_member(sample)
        image_bytes = image[1] if image else None
        early = early_reject(sample, key)
        if early is not None:
            yield Item(index, b"", key, True, image_bytes, early[1], early[0])
            continue
        raw = sample.get("json", b"")
        if _is_caption_sample(sample, url.parent, caption_folders):
            try:
                raw = json.dumps(laion_record(sample, key), ensure_ascii=False).encode("utf-8")
            except SampleRejected as err:
                yield Item(index, b"", key, True, image_bytes, err.detail, err.reason)
                continue
        yield Item(index, raw, key, True, image_bytes)


def _is_caption_sample(sample: dict, folder: Path, known: dict[Path, bool]) -> bool:
    """An img2dataset-style caption pair: a ``.txt`` member, or a folder ``data_tools laion`` wrote."""
    if folder not in known:
        manifest = read_manifest(folder)
        known[folder] = manifest is not None and manifest.get("tool") == "laion"
    return known[folder] or "txt" in sample
