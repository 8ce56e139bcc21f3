"""Lazy record files, the map-style dataset and its length-grouped distributed sampler."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from tests.data.corpus import conv
from yivl.data.map_dataset import ConversationDataset, LengthGroupedSampler
from yivl.data.reasons import SampleRejected
from yivl.data.records import RecordFile
from yivl.errors import YivlError

RECORDS = [
    conv('Quotes " and \\ backslashes, [brackets] {braces}, commas?', "yes", "a.png"),
    {"id": "ü-ñ", "conversations": [{"from": "human", "value": "日本語?"}, {"from": "gpt", "value": "はい"}]},
    conv("Third?", "three", placeholder=False),
]


def test_json_list_and_jsonl_index_the_same_records(tmp_path: Path) -> None:
    (tmp_path / "a.json").write_text(json.dumps(RECORDS, indent=2, ensure_ascii=False), encoding="utf-8")
    (tmp_path / "b.jsonl").write_text("\n".join(json.dumps(r) for r in RECORDS) + "\n\n", encoding="utf-8")
    for name in ("a.json", "b.jsonl"):
        records = RecordFile(tmp_path / name)
        assert [records.record(i) for i in range(len(records))] == RECORDS
        assert records.has_image.tolist() == [True, False, False]
        # only offset arrays are held, never the parsed records
        assert all(isinstance(v, (np.ndarray, Path, int, type(None))) for v in vars(records).values())


def test_each_bad_line_is_its_own_reject(tmp_path: Path) -> None:
    path = tmp_path / "d.jsonl"
    path.write_bytes(b'{"conversations": []}\n{broken\n\xff\xfe\n[1]\r\n')
    records = RecordFile(path)
    assert len(records) == 4
    reasons = []
    for i in range(4):
        try:
            records.record(i)
            reasons.append(None)
        except SampleRejected as err:
            reasons.append(err.reason)
    assert reasons == [None, "json_malformed", "invalid_utf8", "not_an_object"]


def test_truncated_json_list_is_a_clear_error(tmp_path: Path) -> None:
    path = tmp_path / "cut.json"
    path.write_text(json.dumps(RECORDS)[:-20])
    with pytest.raises(
        YivlError, match=r"not valid JSON at line 1 column 395 \(byte 394\): the file ends inside the list"
    ):
        RecordFile(path)


def test_rejected_records_are_replaced_and_counted(tmp_path: Path, tokenizer) -> None:
    from yivl.data.encode import SampleEncoder
    from yivl.data.images import ImageProcessor

    path = tmp_path / "d.jsonl"
    lines = [
        json.dumps(conv("ok?", "fine", placeholder=False)),
        "{bad",
        json.dumps(conv("fine?", "yes", "gone.png")),
    ]
    path.write_text("\n".join(lines) + "\n")
    ds = ConversationDataset(path, tmp_path, SampleEncoder(tokenizer, ImageProcessor(28), 4, 512))
    assert [ds[i].key for i in range(3)] == ["d.jsonl:0", "d.jsonl:0", "d.jsonl:0"]
    assert ds.skips.counts() == {
        "json_malformed": 1,
        "image_missing": 2,
    }  # ds[1] skips 1 and 2, ds[2] skips 2


def _sampler(lengths, world=1, rank=0, drop_last=False, seed=0) -> LengthGroupedSampler:
    return LengthGroupedSampler(lengths, len(lengths), 4, world, rank, seed=seed, drop_last=drop_last)


def test_ranks_get_disjoint_complete_shares() -> None:
    lengths = np.random.default_rng(0).integers(10, 500, size=96)
    shares = [list(_sampler(lengths, world=3, rank=r)) for r in range(3)]
    assert all(len(s) == 32 for s in shares)
    assert sorted(i for s in shares for i in s) == list(range(96))


def test_batches_group_similar_lengths_longest_first() -> None:
    lengths = np.random.default_rng(1).integers(1, 1000, size=400)
    order = np.array(list(_sampler(lengths))).reshape(-1, 4)
    spread = (lengths[order].max(1) - lengths[order].min(1)).mean()
    random_spread = np.mean([np.ptp(lengths[np.random.default_rng(s).choice(400, 4)]) for s in range(200)])
    assert spread < random_spread / 4
    assert lengths[order[0]].max() == lengths.max()


def test_epochs_reshuffle_and_resume_skips_exactly() -> None:
    lengths = np.arange(40)
    sampler = _sampler(lengths)
    sampler.set_epoch(0)
    epoch0 = list(sampler)
    sampler.set_epoch(1)
    assert list(sampler) != epoch0
    resumed = _sampler(lengths)
    resumed.set_epoch(0)
    resumed.skip_batches(0, 3)
    assert list(resumed) == epoch0[12:]
    assert list(resumed) == epoch0  # the skip applies once
