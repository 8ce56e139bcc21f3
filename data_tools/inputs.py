"""Input readers for the tools: JSON/JSONL records, or the samples of local tar shards in order."""

from __future__ import annotations

import tarfile
from collections.abc import Iterator
from pathlib import Path

from data_tools.process import Item
from yivl.data.records import RecordFile
from yivl.data.shards import expand_shards, image_member, read_tar_samples


def is_shard_input(path: Path | str) -> bool:
    """A folder, a .tar file or a brace pattern of tars (rather than a JSON/JSONL file)."""
    text = str(path)
    return Path(text).is_dir() or text.endswith(".tar") or "{" in text


def local_shards(spec: str) -> list[Path]:
    """Local shard files of a folder, pattern or ``::`` list, sorted as given."""
    return [Path(u) for u in expand_shards(spec)]


def tar_samples(shards: list[Path]) -> Iterator[dict]:
    """Samples of the shards in order. A shard that cannot be read to its end yields one
    ``{"__error__": message}`` item after its readable samples (so it is accounted for)."""
    for shard in shards:
        count = 0
        try:
            for sample in read_tar_samples(shard):
                sample["__url__"] = str(shard)
                count += 1
                yield sample
        except (tarfile.TarError, OSError, EOFError) as err:
            yield {
                "__key__": shard.name,
                "__url__": str(shard),
                "__error__": f"{shard}: unreadable after {count} samples ({err})",
            }


def conversation_items(input_path: Path, start: int = 0) -> tuple[int | None, Iterator[Item]]:
    """``(total or None when streaming shards, items)`` for the record tools, from index ``start``."""
    if is_shard_input(input_path):
        return None, _shard_items(local_shards(str(input_path)), start)
    records = RecordFile(input_path)
    return len(records), (Item(i, records.raw(i)) for i in range(start, len(records)))


def _shard_items(shards: list[Path], start: int) -> Iterator[Item]:
    for index, sample in enumerate(tar_samples(shards)):
        if index < start:
            continue
        key = f"{Path(sample['__url__']).name}:{sample['__key__']}"
        image = image_member(sample)
        raw = sample.get("json", b"")
        yield Item(index, raw, key, True, image[1] if image else None, sample.get("__error__"))
