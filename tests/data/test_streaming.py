"""Streaming sources: node/worker splitting, shuffling, mixing weights, fixed epochs, corrupt data."""

from __future__ import annotations

import io
import json
import random
import tarfile
import time
from collections import Counter
from pathlib import Path

import pytest
import torch

from tests.data.corpus import conv
from yivl.data.collate import Collator, Sample
from yivl.data.reasons import SkipCounter
from yivl.data.shards import TarShardWriter, expand_shards, shard_name
from yivl.data.sources import (
    ConversationShardSource,
    JsonSource,
    LaionShardSource,
    WorkerInfo,
    shuffle_buffer,
)
from yivl.data.streaming import StreamingDataset, worker_quota
from yivl.errors import YivlError


def write_shards(folder: Path, n_shards: int, per_shard: int, tag: str = "s") -> list[str]:
    """Text-only conversation shards; sample keys are ``{tag}{shard}x{i}``."""
    folder.mkdir(parents=True, exist_ok=True)
    for s in range(n_shards):
        writer = TarShardWriter(folder / shard_name(s))
        for i in range(per_shard):
            record = conv(f"Question {s}-{i}?", f"answer {s} {i}", placeholder=False)
            writer.write(f"{tag}{s}x{i}", {"json": json.dumps(record).encode()})
        writer.close()
    return [str(folder / shard_name(s)) for s in range(n_shards)]


class KeyEncoder:
    """Stands in for SampleEncoder: a sample that only carries its key (tests of order and coverage)."""

    def encode(self, record, image, key) -> Sample:
        ids = torch.tensor([1])
        return Sample(ids, ids, torch.zeros(0, 3, 2, 2), key)


class KeyCollator(Collator):
    def __call__(self, samples):
        return [s.key for s in samples]


def keyed_dataset(sources, batch_size=4, batches=None, resampled=False, seed=0) -> StreamingDataset:
    ds = StreamingDataset(sources, batch_size, batches, resampled=resampled, seed=seed)
    ds.bind(KeyEncoder(), KeyCollator(2))
    return ds


def reader_keys(ds: StreamingDataset, info: WorkerInfo, epoch: int = 0) -> list[str]:
    ds.worker_info = info
    ds.position.set_epoch(epoch)
    return [k for batch in ds for k in batch]


def readers(world: int, workers: int) -> list[WorkerInfo]:
    return [WorkerInfo(r, world, w, workers) for r in range(world) for w in range(workers)]


@pytest.fixture(scope="module")
def shards(tmp_path_factory) -> list[str]:
    return write_shards(tmp_path_factory.mktemp("shards"), n_shards=12, per_shard=5)


def test_exhaustive_split_is_disjoint_and_complete(shards: list[str]) -> None:
    ds = keyed_dataset([ConversationShardSource(shards, shuffle_buffer=8)])
    per_reader = [reader_keys(ds, info) for info in readers(world=2, workers=3)]
    everything = [k for keys in per_reader for k in keys]
    assert len(everything) == len(set(everything)) == 60
    assert all(keys for keys in per_reader)


def test_json_records_split_disjoint_and_complete(tmp_path: Path) -> None:
    path = tmp_path / "d.jsonl"
    path.write_text("".join(json.dumps(conv(f"q{i}?", "a", placeholder=False)) + "\n" for i in range(23)))
    ds = keyed_dataset([JsonSource(path)], batch_size=2)
    everything = [k for info in readers(world=3, workers=2) for k in reader_keys(ds, info)]
    assert sorted(everything) == sorted(f"d.jsonl:{i}" for i in range(23))


def test_shard_order_is_deterministic_per_epoch_and_changes_between_epochs(shards: list[str]) -> None:
    source = ConversationShardSource(shards, shuffle_buffer=0)
    info = WorkerInfo(0, 1, 0, 1)
    order = lambda epoch: list(source._shards(epoch, "0.0", info, False, seed=3))  # noqa: E731
    assert order(0) == order(0)
    assert order(0) != order(1)
    assert sorted(order(1)) == sorted(shards)


def test_shuffle_buffer_permutes_without_loss() -> None:
    items = list(range(200))
    out = list(shuffle_buffer(iter(items), 50, random.Random(0), initial=10))
    assert sorted(out) == items and out != items


def test_every_rank_yields_the_same_number_of_batches(shards: list[str]) -> None:
    """Uneven shards per reader still give exactly batches_per_epoch per rank (passes repeat)."""
    source = ConversationShardSource(shards[:7], shuffle_buffer=4)  # 7 shards over 2 ranks x 2 workers
    for rank in range(2):
        total = 0
        for worker in range(2):
            ds = keyed_dataset([source], batch_size=3, batches=9)
            total += len(list_batches(ds, WorkerInfo(rank, 2, worker, 2)))
        assert total == 9


def list_batches(ds: StreamingDataset, info: WorkerInfo) -> list:
    ds.worker_info = info
    return list(ds)


def test_worker_quota_splits_exactly() -> None:
    assert [worker_quota(10, WorkerInfo(0, 1, w, 4)) for w in range(4)] == [3, 3, 2, 2]


def test_too_few_shards_for_readers_is_a_clear_error(shards: list[str]) -> None:
    ds = keyed_dataset([ConversationShardSource(shards[:3])], batches=4)
    with pytest.raises(YivlError, match="resampled"):
        list_batches(ds, WorkerInfo(0, 2, 0, 2))


def test_mixing_weights_hold(tmp_path: Path) -> None:
    a = write_shards(tmp_path / "a", 4, 20, tag="a")
    b = write_shards(tmp_path / "b", 4, 20, tag="b")
    sources = [ConversationShardSource(a, weight=3.0, shuffle_buffer=10), ConversationShardSource(b, 1.0, 10)]
    ds = keyed_dataset(sources, batch_size=10, batches=400, resampled=True)
    keys = [k for batch in list_batches(ds, WorkerInfo()) for k in batch]
    share = Counter(k.split(":")[1][0] for k in keys)["a"] / len(keys)
    assert len(keys) == 4000
    assert abs(share - 0.75) < 0.03


def test_resampled_streams_are_reproducible(shards: list[str]) -> None:
    def first(epoch: int) -> list[str]:
        ds = keyed_dataset(
            [ConversationShardSource(shards, shuffle_buffer=5)], batches=5, resampled=True, seed=1
        )
        return reader_keys(ds, WorkerInfo(), epoch)

    assert first(0) == first(0)
    assert first(0) != first(1)


def test_corrupt_samples_are_skipped_counted_and_not_slow(tmp_path: Path) -> None:
    good = write_shards(tmp_path / "good", 1, 4)
    bad = tmp_path / "bad.tar"
    with tarfile.open(bad, "w") as tar:
        for i in range(20):
            for ext, data in (("json", b"{not json"), ("jpg", b"\xff\xd8 not a jpeg")):
                info = tarfile.TarInfo(f"b{i}.{ext}")
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))
        info = tarfile.TarInfo("orphan.jpg")
        info.size = 3
        tar.addfile(info, io.BytesIO(b"abc"))
    truncated = tmp_path / "truncated.tar"
    truncated.write_bytes(Path(good[0]).read_bytes()[:1600])  # inside the 2nd sample
    skips = SkipCounter()
    ds = StreamingDataset([ConversationShardSource([*good, str(bad), str(truncated)])], 2, None, skips=skips)
    ds.bind(KeyEncoder(), KeyCollator(2))
    start = time.perf_counter()
    keys = [k for batch in list_batches(ds, WorkerInfo()) for k in batch]
    assert time.perf_counter() - start < 2.0  # no per-error sleep
    counts = skips.counts()
    assert counts["json_malformed"] == 20 and counts["sample_incomplete"] == 1
    assert counts.get("shard_corrupt", 0) >= 1
    assert len([k for k in keys if k.startswith("shard-000000")]) == 4
    assert len([k for k in keys if k.startswith("truncated.tar")]) == 1  # the sample before the cut


def test_brace_patterns_pipes_and_missing_shards(shards: list[str]) -> None:
    folder = Path(shards[0]).parent
    assert expand_shards(str(folder / "shard-{000000..000011}.tar")) == shards
    assert expand_shards(str(folder)) == shards
    with pytest.raises(YivlError, match="shard not found"):
        expand_shards(str(folder / "shard-{000000..000012}.tar"))
    ds = keyed_dataset([ConversationShardSource([f"pipe:cat {shards[0]}"], shuffle_buffer=0)])
    assert len([k for b in list_batches(ds, WorkerInfo()) for k in b]) == 5


def test_laion_pairs_become_caption_conversations(tmp_path: Path) -> None:
    path = tmp_path / "00000.tar"
    writer = TarShardWriter(path)
    for i in range(6):
        meta = {"caption": f"meta caption {i}", "key": f"00000{i:04d}"}
        members = {"jpg": b"\xff\xd8fake", "json": json.dumps(meta).encode()}
        if i % 2 == 0:
            members["txt"] = f"a photo of thing {i}".encode()
        writer.write(f"00000{i:04d}", members)
    writer.close()
    prompts = ["Describe it.", "Caption it."]
    source = LaionShardSource([str(path)], shuffle_buffer=0, caption_prompts=prompts)
    items = list(source.items(0, "0", WorkerInfo(), SkipCounter(), False, 0))
    assert len(items) == 6
    for item in items:
        human, reply = item.record["conversations"]
        assert human["value"].split("\n", 1)[1] in prompts
        i = int(item.key[-1])
        assert reply["value"] == (f"a photo of thing {i}" if i % 2 == 0 else f"meta caption {i}")
        assert item.image == b"\xff\xd8fake"
    again = list(source.items(1, "0", WorkerInfo(), SkipCounter(), False, 0))
    prompt_of = lambda its: {it.key: it.record["conversations"][0]["value"] for it in its}  # noqa: E731
    assert prompt_of(items) == prompt_of(again)  # a sample keeps its prompt
