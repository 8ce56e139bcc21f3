"""The synthetic shapes dataset: deterministic, idempotent, learnable answers, evaluation files."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from PIL import Image

from yivl.data.encode import SampleEncoder
from yivl.data.synthetic import COLOURS, SHAPES, ensure_synthetic_dataset
from yivl.errors import YivlError

ANSWERS = set(COLOURS) | set(SHAPES) | {"1", "2", "3", "left", "right", "yes", "no", "A", "B", "C", "D"}


@pytest.fixture(scope="module")
def synth(tmp_path_factory) -> Path:
    return ensure_synthetic_dataset(
        tmp_path_factory.mktemp("s") / "synthetic", num_train=60, num_val=20, seed=3
    )


def _lines(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_same_seed_same_bytes_other_seed_other_data(synth: Path, tmp_path: Path) -> None:
    again = ensure_synthetic_dataset(tmp_path / "again", num_train=60, num_val=20, seed=3)
    for name in ("train.jsonl", "val.jsonl", "eval_vqa.jsonl", "images/train-000007.png"):
        assert (again / name).read_bytes() == (synth / name).read_bytes()
    other = ensure_synthetic_dataset(tmp_path / "other", num_train=60, num_val=20, seed=4)
    assert (other / "train.jsonl").read_bytes() != (synth / "train.jsonl").read_bytes()


def test_second_call_reuses_the_data(synth: Path) -> None:
    stamp = (synth / "train.jsonl").stat().st_mtime_ns
    assert ensure_synthetic_dataset(synth, num_train=60, num_val=20, seed=3) == synth
    assert (synth / "train.jsonl").stat().st_mtime_ns == stamp


def test_refuses_a_foreign_folder(tmp_path: Path) -> None:
    (tmp_path / "mine.txt").write_text("keep me")
    with pytest.raises(YivlError, match="not a synthetic dataset"):
        ensure_synthetic_dataset(tmp_path)
    assert (tmp_path / "mine.txt").exists()


def test_records_are_valid_with_short_answers(synth: Path, tokenizer) -> None:
    encoder = SampleEncoder(tokenizer, None, num_image_tokens=64, max_length=4096)
    records = _lines(synth / "train.jsonl")
    assert len(records) == 60
    for i, record in enumerate(records):
        encoder.encode_text(record, f"r{i}")  # raises on any problem
        if "image" in record:
            with Image.open(synth / record["image"]) as img:
                assert img.mode == "RGB" and min(img.size) >= 112
            answers = [t["value"] for t in record["conversations"][1::2]]
            assert set(answers) <= ANSWERS


def test_evaluation_files_follow_the_schema(synth: Path) -> None:
    vqa, yesno, mcq = (_lines(synth / f"eval_{n}.jsonl") for n in ("vqa", "yesno", "mcq"))
    assert len(vqa) + len(yesno) == 20 and len(mcq) == 20
    for row in vqa:
        assert row["task_type"] == "vqa" and len(row["answers"]) == 10 and row["answers"][0] in ANSWERS
        assert (synth / row["image"]).is_file()
    assert all(r["answer"] in ("yes", "no") for r in yesno)
    assert all(r["choices"]["ABCD".index(r["answer"])] in COLOURS for r in mcq)
    train_images = {r.get("image") for r in _lines(synth / "train.jsonl")}
    assert not train_images & {r["image"] for r in vqa + mcq}  # held out
