"""Streaming sources: where raw records come from, split by node and worker, shuffled per epoch.

Each source yields :class:`RawItem` (key, parsed record, image bytes or path). Shard sources follow
open_clip's recipe on top of webdataset: shard list shuffled per epoch (same order on every rank), split
by node then by worker (disjoint and complete), or resampled with replacement; samples then go through a
shuffle buffer. Bytes stay raw until after the buffer, so the buffer holds compressed images.
"""

from __future__ import annotations

import os
import random
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from itertools import count
from pathlib import Path

import torch
import webdataset as wds

from yivl.data.captions import DEFAULT_CAPTION_PROMPTS, laion_record
from yivl.data.checks import record_image_path
from yivl.data.reasons import SampleRejected, SkipCounter
from yivl.data.records import DEFAULT_MAX_RECORD_BYTES, RecordFile, parse_record
from yivl.data.shards import expand_shards, image_member


@dataclass
class RawItem:
    """One undecoded sample: ``image`` is bytes (from a shard), a path (JSON source) or None."""

    key: str
    record: dict
    image: bytes | Path | None


@dataclass(frozen=True)
class WorkerInfo:
    """Which slice of the data this process reads: node ``rank`` of ``world_size``, DataLoader ``worker``."""

    rank: int = 0
    world_size: int = 1
    worker: int = 0
    num_workers: int = 1

    @property
    def slot(self) -> int:
        """Index of this reader among all ``world_size * num_workers`` readers."""
        return self.rank * self.num_workers + self.worker

    @property
    def slots(self) -> int:
        return self.world_size * self.num_workers


def current_worker_info() -> WorkerInfo:
    """Rank from torch.distributed (or the RANK/WORLD_SIZE environment), worker from the DataLoader."""
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        rank, world = torch.distributed.get_rank(), torch.distributed.get_world_size()
    else:
        rank, world = int(os.environ.get("RANK", 0)), int(os.environ.get("WORLD_SIZE", 1))
    info = torch.utils.data.get_worker_info()
    worker, workers = (info.id, info.num_workers) if info is not None else (0, 1)
    return WorkerInfo(rank, world, worker, workers)


def split_for(items: Sequence, info: WorkerInfo) -> Sequence:
    """This reader's share of ``items``: by node first, then by worker (disjoint, together complete)."""
    return items[info.rank :: info.world_size][info.worker :: info.num_workers]


def shuffle_buffer(items: Iterator, size: int, rng: random.Random, initial: int = 1) -> Iterator:
    """Shuffle a stream through a buffer of up to ``size`` items.

    Emitting starts once ``initial`` items are held; the buffer then grows towards ``size`` (emitting
    about one item per two read) and stays there.
    """
    if size <= 1:
        yield from items
        return
    buf: list = []
    for item in items:
        buf.append(item)
        if len(buf) < min(initial, size) or (len(buf) < size and rng.random() < 0.5):
            continue
        j = rng.randrange(len(buf))
        buf[j], buf[-1] = buf[-1], buf[j]
        yield buf.pop()
    rng.shuffle(buf)
    yield from buf


class StreamSource:
    """Base for sources: ``items()`` gives this reader's raw items for one pass of one epoch."""

    weight: float = 1.0
    num_units: int = 0  # shards or records: what gets split across readers

    def items(
        self, epoch: int, pass_id: str, info: WorkerInfo, skips: SkipCounter, resampled: bool, seed: int
    ) -> Iterator[RawItem]:
        raise NotImplementedError


def _rng(*parts: int | str) -> random.Random:
    return random.Random("-".join(str(p) for p in parts))


class JsonSource(StreamSource):
    """A JSON/JSONL record file read as a stream (records are the units split across readers).

    Image paths must resolve inside ``image_folder`` unless ``allow_outside``.
    """

    def __init__(
        self,
        path: str | Path,
        image_folder: str | Path | None = None,
        weight: float = 1.0,
        allow_outside: bool = False,
        max_record_bytes: int = DEFAULT_MAX_RECORD_BYTES,
    ) -> None:
        self.records = RecordFile(path, max_record_bytes)
        self.image_folder = Path(image_folder) if image_folder else Path(path).parent
        self.allow_outside = bool(allow_outside)
        self.weight = float(weight)
        self.num_units = len(self.records)

    def _indices(
        self, epoch: int, pass_id: str, info: WorkerInfo, resampled: bool, seed: int
    ) -> Iterator[int]:
        if resampled:
            rng = _rng(seed, epoch, pass_id, info.slot, "records")
            return (rng.randrange(self.num_units) for _ in count())
        order = list(range(self.num_units))
        _rng(seed, epoch, pass_id, "records").shuffle(order)
        return iter(split_for(order, info))

    def items(self, epoch, pass_id, info, skips, resampled, seed):
        for i in self._indices(epoch, pass_id, info, resampled, seed):
            key = f"{self.records.path.name}:{i}"
            try:
                record = self.records.record(i)
                path = record_image_path(record, self.image_folder, key, self.allow_outside)
            except SampleRejected as err:
                skips.add(err.reason, str(err))
                continue
            yield RawItem(key, record, path)


class ShardSource(StreamSource):
    """WebDataset shards (local paths, brace patterns or ``pipe:`` commands); shards are the units."""

    def __init__(
        self,
        urls: str | Sequence[str],
        weight: float = 1.0,
        shuffle_buffer: int = 1000,
        max_record_bytes: int = DEFAULT_MAX_RECORD_BYTES,
    ) -> None:
        self.urls = expand_shards(urls)
        self.weight = float(weight)
        self.shuffle_buffer = int(shuffle_buffer)
        self.max_record_bytes = int(max_record_bytes)
        self.num_units = len(self.urls)

    def _shards(
        self, epoch: int, pass_id: str, info: WorkerInfo, resampled: bool, seed: int
    ) -> Iterator[str]:
        if resampled:
            rng = _rng(seed, epoch, pass_id, info.slot, "shards")
            return (rng.choice(self.urls) for _ in count())
        order = list(self.urls)
        _rng(seed, epoch, pass_id, "shards").shuffle(order)
        return iter(split_for(order, info))

    def samples(self, epoch, pass_id, info, skips, resampled, seed) -> Iterator[dict]:
        """Raw WebDataset samples (dicts of bytes) of this reader, through the shuffle buffer."""

        def handler(exn: Exception) -> bool:
            skips.add("shard_corrupt", repr(exn))
            return True  # continue, no sleep

        shards = ({"url": u} for u in self._shards(epoch, pass_id, info, resampled, seed))
        raw = wds.tarfile_to_samples(handler=handler)(shards)
        rng = _rng(seed, epoch, pass_id, info.slot, "buffer")
        return shuffle_buffer(raw, self.shuffle_buffer, rng, initial=max(1, self.shuffle_buffer // 5))

    def to_item(self, sample: dict) -> RawItem:
        raise NotImplementedError

    def items(self, epoch, pass_id, info, skips, resampled, seed):
        for sample in self.samples(epoch, pass_id, info, skips, resampled, seed):
            try:
                check_record_members(sample, self.max_record_bytes)
                yield self.to_item(sample)
            except SampleRejected as err:
                skips.add(err.reason, str(err))


class ConversationShardSource(ShardSource):
    """Shards written by ``data_tools convert``: ``KEY.json`` record (+ ``KEY.jpg``/``KEY.png``)."""

    def to_item(self, sample: dict) -> RawItem:
        key = f"{Path(sample.get('__url__', '?')).name}:{sample['__key__']}"
        if "json" not in sample:
            raise SampleRejected("sample_incomplete", f"{key}: no .json member")
        record = parse_record(sample["json"], key)
        image = image_member(sample)
        return RawItem(key, record, image[1] if image else None)


class LaionShardSource(ShardSource):
    """img2dataset shards (``KEY.jpg``, ``KEY.txt``, ``KEY.json``) as one-turn caption conversations.

    The prompt is picked from ``caption_prompts`` by a hash of the key, so a sample always gets the same
    one; the caption is the reply.
    """

    def __init__(
        self,
        urls,
        weight: float = 1.0,
        shuffle_buffer: int = 1000,
        caption_prompts: Sequence[str] = DEFAULT_CAPTION_PROMPTS,
        max_record_bytes: int = DEFAULT_MAX_RECORD_BYTES,
    ) -> None:
        super().__init__(urls, weight, shuffle_buffer, max_record_bytes)
        self.caption_prompts = tuple(caption_prompts) or DEFAULT_CAPTION_PROMPTS

    def to_item(self, sample: dict) -> RawItem:
        key = f"{Path(sample.get('__url__', '?')).name}:{sample['__key__']}"
        image = image_member(sample)
        if image is None:
            raise SampleRejected("sample_incomplete", f"{key}: no image member")
        return RawItem(key, laion_record(sample, key, self.caption_prompts), image[1])


def check_record_members(sample: dict, max_record_bytes: int) -> None:
    """Reject a shard sample whose ``.json`` or ``.txt`` is over ``max_record_bytes``, before parsing."""
    for ext in ("json", "txt"):
        size = len(sample.get(ext, b""))
        if size > max_record_bytes:
            key = f"{Path(sample.get('__url__', '?')).name}:{sample.get('__key__')}"
            raise SampleRejected(
                "record_too_large", f"{key}.{ext}: {size:,} bytes, over max_record_bytes={max_record_bytes:,}"
            )
