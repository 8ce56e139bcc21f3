"""Sequence packing: the bin packers, the streaming packer's coverage, packed batches and their labels."""

from __future__ import annotations

import zlib
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from tests.data.test_streaming import readers, write_shards
from yivl.constants import IGNORE_INDEX, IMAGE_TOKEN_INDEX
from yivl.data.collate import Collator, PackedCollator, Sample
from yivl.data.datamodule import YiVLDataModule
from yivl.data.encode import SampleEncoder
from yivl.data.images import ImageProcessor
from yivl.data.packing import PackedSampler, pack_indices, pack_stream, sample_length
from yivl.data.sources import ConversationShardSource
from yivl.data.streaming import StreamingDataset
from yivl.data.synthetic import ensure_synthetic_dataset

PACK = 20


def test_pack_indices_is_deterministic_and_fills_rows_with_the_longest_that_fits() -> None:
    lengths = np.array([9, 2, 7, 11, 4, 5, 1, 20, 8, 3])
    rows = pack_indices(np.arange(10), lengths, PACK, buffer=4)
    # a full buffer closes a row: its oldest sample, then the longest that still fits, and so on:
    # 9+11 | 2+7+5+4 | 1+8+3 (20 did not fit) | 20 (the end empties the buffer)
    assert rows == [[0, 3], [1, 2, 4, 5], [6, 8, 9], [7]]
    assert pack_indices(np.arange(10), lengths, PACK, buffer=4) == rows
    assert sorted(i for row in rows for i in row) == list(range(10))
    assert all(lengths[row].sum() <= PACK for row in rows)
    with pytest.raises(ValueError, match="a sample of 21 tokens cannot go into rows of 20"):
        pack_indices(np.arange(2), np.array([3, 21]), PACK, 4)


def test_pack_stream_holds_at_most_its_buffer_and_emits_every_item_once() -> None:
    rng = np.random.default_rng(0)
    lengths = rng.integers(1, PACK + 1, 500).tolist()
    pulled = []

    def items():
        for i, n in enumerate(lengths):
            pulled.append(i)
            yield (i, n)

    emitted = 0
    rows = []
    for row in pack_stream(items(), lambda item: item[1], PACK, buffer=16):
        emitted += len(row)
        assert len(pulled) - emitted <= 15  # never more than the buffer waiting (after closing a row)
        assert sum(n for _, n in row) <= PACK
        assert [i for i, _ in row] == sorted(i for i, _ in row)
        rows.append(row)
    assert sorted(i for row in rows for i, _ in row) == list(range(500))
    assert sum(lengths) / (len(rows) * PACK) > 0.9


class LengthEncoder:
    """Stands in for SampleEncoder: a text sample of 1-12 ids whose count depends on its key."""

    num_image_tokens = 4

    def encode(self, record, image, key) -> Sample:
        ids = torch.ones(zlib.crc32(key.encode()) % 12 + 1, dtype=torch.long)
        return Sample(ids, ids, torch.zeros(0, 3, 2, 2), key)


class RowKeys(Collator):
    def __call__(self, rows):
        return [[(s.key, len(s.input_ids)) for s in row] for row in rows]


@pytest.mark.parametrize("world, workers", [(1, 1), (2, 3)])
def test_streaming_packer_covers_every_sample_once_under_node_and_worker_splitting(
    tmp_path: Path, world: int, workers: int
) -> None:
    shards = write_shards(tmp_path, n_shards=12, per_shard=5)
    ds = StreamingDataset(
        [ConversationShardSource(shards, shuffle_buffer=8)], batch_size=2, batches_per_epoch=None
    )
    ds.pack = (PACK, 6)
    ds.bind(LengthEncoder(), RowKeys(2))
    keys = []
    for info in readers(world, workers):
        ds.worker_info = info
        for batch in ds:
            assert all(sum(n for _, n in row) <= PACK for row in batch)
            keys += [key for row in batch for key, _ in row]
    expected = [f"shard-{s:06d}.tar:s{s}x{i}" for s in range(12) for i in range(5)]
    assert sorted(keys) == sorted(expected)


def rows_of(sampler: PackedSampler) -> list[tuple[int, ...]]:
    return list(sampler)


def test_packed_sampler_deals_disjoint_rows_per_rank_and_reshuffles_each_epoch() -> None:
    lengths = np.random.default_rng(1).integers(1, PACK + 1, 300)
    lengths[[5, 17]] = -1  # rejected while measuring
    ranks = [PackedSampler(lengths, PACK, 64, batch_size=3, num_replicas=2, rank=r, seed=4) for r in (0, 1)]
    epoch0 = [rows_of(s) for s in ranks]
    assert len(epoch0[0]) == len(epoch0[1]) == len(ranks[0]) and len(ranks[0]) % 3 == 0
    used = [i for rows in epoch0 for row in rows for i in row]
    assert len(used) == len(set(used)) and not {5, 17} & set(used)
    assert all(sum(lengths[list(row)]) <= PACK for rows in epoch0 for row in rows)
    assert len(used) > 0.95 * 298  # drop_last leaves out less than one global batch of rows
    for s in ranks:
        s.set_epoch(1)
    assert rows_of(ranks[0]) != epoch0[0]
    ranks[0].set_epoch(0)
    ranks[0].skip_batches(0, 2)
    assert rows_of(ranks[0]) == epoch0[0][6:]


def test_packed_sampler_deals_the_first_epochs_batch_count_in_every_epoch() -> None:
    """Lightning reads len() once: an epoch that packs into more or fewer rows still deals that many."""
    lengths = np.random.default_rng(3).integers(1, PACK + 1, 200)
    sampler = PackedSampler(lengths, PACK, 16, batch_size=2, num_replicas=2, rank=1, seed=0, drop_last=False)
    want = len(sampler)
    rows = []
    for epoch in range(8):
        sampler.set_epoch(epoch)
        rows.append(len(sampler._rows()))
        assert len(sampler) == want and len(rows_of(sampler)) == want
    assert len(set(rows)) > 1  # the epochs' plans do differ in length
    assert want == -(-rows[0] // 4) * 2  # the first epoch's: ceil(rows / (2 ranks x 2)) batches of 2


def test_length_pass_rejects_are_counted_once_over_the_ranks(synth, tokenizer) -> None:
    """Every rank measures every record; a reject is counted by one of them (the metric and the
    reject fraction of a rank then mean what they mean unpacked)."""

    def counts(world: int, rank: int) -> dict[str, int]:
        dm = packed_module(synth, tokenizer, False, pack_length=200, max_reject_fraction=1.0, batch_size=1)
        dm.trainer = SimpleNamespace(world_size=world, global_rank=rank, overfit_batches=0, current_epoch=0)
        dm.train_dataloader()  # measures the lengths; nothing is read yet
        return dm.skip_counts()

    one = counts(1, 0)
    assert one["too_long"] > 1
    ranks = [counts(2, r) for r in (0, 1)]
    assert all(r["too_long"] > 0 for r in ranks)
    assert sum(r["too_long"] for r in ranks) == one["too_long"]


def text_sample(tokenizer, question: str, reply: str, image: bool) -> Sample:
    encoder = SampleEncoder(tokenizer, ImageProcessor(size=14), num_image_tokens=4, max_length=512)
    record = {"conversations": [{"from": "human", "value": question}, {"from": "gpt", "value": reply}]}
    if image:
        record["image"] = "x.png"
        record["conversations"][0]["value"] = "<image_placeholder>\n" + question
    text = encoder.encode_text(record, question)
    pixels = torch.full((int(image), 3, 14, 14), float(len(reply)))
    return Sample(torch.tensor(text.example.input_ids), torch.tensor(text.example.labels), pixels, question)


def test_packed_collator_rows_keep_each_samples_labels_and_images(tokenizer) -> None:
    replies = ["Red.", "A large blue square in the top left corner.", "Two.", "Yes, it is."]
    samples = [text_sample(tokenizer, f"Question {i}?", r, i % 2 == 0) for i, r in enumerate(replies)]
    batch = PackedCollator(14, tokenizer.pad_token_id)([samples[:3], [samples[3]], []])
    assert tuple(batch) == ("input_ids", "labels", "attention_mask", "pixel_values", "sequence_ids")
    assert batch["input_ids"].shape[0] == 2  # the empty row is dropped
    # images in the row-major order of their -200 ids: sample 0's, then sample 2's
    assert batch["pixel_values"][:, 0, 0, 0].tolist() == [len(replies[0]), len(replies[2])]
    for r, row in enumerate([[0, 1, 2], [3]]):
        seq = batch["sequence_ids"][r]
        for n, k in enumerate(row):
            sample = samples[k]
            at = seq == n
            assert batch["input_ids"][r, at].tolist() == sample.input_ids.tolist()
            labels = batch["labels"][r, at]
            decoded = tokenizer.decode(labels[labels != IGNORE_INDEX].tolist())
            assert decoded == " " + replies[k] + "\n###"
        assert (batch["attention_mask"][r] == (seq >= 0)).all()
    assert int((batch["input_ids"] == IMAGE_TOKEN_INDEX).sum()) == 2
    assert sample_length(samples[0], 4) == len(samples[0].input_ids) + 3


@pytest.fixture(scope="module")
def synth(tmp_path_factory) -> Path:
    return ensure_synthetic_dataset(
        tmp_path_factory.mktemp("d") / "synthetic", num_train=40, num_val=8, seed=0
    )


def packed_module(synth: Path, tokenizer, stream: bool, pack_length: int, **kw) -> YiVLDataModule:
    spec = {"type": "synthetic", "root": str(synth), "num_train": 40, "num_val": 8}
    train = [spec, {**spec, "split": "val", "weight": 0.2}] if stream else [spec]
    kw = {"batch_size": 2, **kw}
    dm = YiVLDataModule(train, samples_per_epoch=40, packing=True, pack_length=pack_length, **kw)
    dm.bind(tokenizer, ImageProcessor(size=28), num_image_tokens=64)
    return dm


@pytest.mark.parametrize("stream", [False, True])
def test_packed_training_batches_fill_rows_up_to_pack_length(synth, tokenizer, stream) -> None:
    """The synthetic samples are 84-230 tokens with 64 per image: rows of 400 hold two or more."""
    dm = packed_module(synth, tokenizer, stream, pack_length=400)
    batches = list(dm.train_dataloader())
    # map-style: the epoch's samples make 20 rows; a stream keeps its unpacked count of 40 / 2 batches
    assert len(batches) == (20 if stream else 10) and all("sequence_ids" in b for b in batches)
    samples = 0
    for b in batches:
        width = torch.where(b["input_ids"] == IMAGE_TOKEN_INDEX, 64, 1) * b["attention_mask"]
        assert int(width.sum(1).max()) <= 400
        samples += sum(int(row.max()) + 1 for row in b["sequence_ids"])
    assert samples >= 2 * 2 * len(batches)  # at least two samples per row on average
    assert dm.skip_counts() == {}
    assert dm.encoder.max_length == 4096 and dm.train_encoder.max_length == 400


@pytest.mark.parametrize("stream", [False, True])
def test_samples_longer_than_a_row_are_skipped_and_counted(synth, tokenizer, stream) -> None:
    dm = packed_module(synth, tokenizer, stream, pack_length=200, max_reject_fraction=1.0)
    for b in dm.train_dataloader():
        width = torch.where(b["input_ids"] == IMAGE_TOKEN_INDEX, 64, 1) * b["attention_mask"]
        assert int(width.sum(1).max()) <= 200
    assert dm.skip_counts()["too_long"] > 0 and set(dm.skip_counts()) == {"too_long"}


def test_packed_map_style_resumes_at_the_same_position(synth, tokenizer) -> None:
    def ids(batch):
        return tuple(batch["input_ids"].flatten().tolist())

    full = [ids(b) for b in packed_module(synth, tokenizer, False, pack_length=400).train_dataloader()]
    dm = packed_module(synth, tokenizer, False, pack_length=400)
    it = iter(dm.train_dataloader())
    head = [ids(next(it)) for _ in range(3)]
    state = dm.state_dict()
    assert state["batches_done"] == 3
    resumed = packed_module(synth, tokenizer, False, pack_length=400)
    resumed.load_state_dict(state)
    assert head + [ids(b) for b in resumed.train_dataloader()] == full
