"""data_tools inputs as users bring them: repeated ids, oversized records, img2dataset shards with
folders in member names or interleaved members, and caption shards read back by stats and inspect."""

from __future__ import annotations

import io
import json
import tarfile
from pathlib import Path

import pytest

from data_tools.cli import main
from data_tools.inputs import record_items
from tests.data.corpus import MAX_LENGTH, conv
from tests.data.img2dataset_layout import repack, write_shard
from yivl.data.records import RecordFile
from yivl.data.shards import TarShardWriter, read_tar_samples


def _model_args(model: Path) -> list[str]:
    # small files where one reject is over the default 5%: the fraction stop is tested elsewhere
    args = ["--model-path", str(model), "--processes", "1", "--max-length", str(MAX_LENGTH)]
    return [*args, "--max-reject-fraction", "1"]


def _rejects(out: Path) -> dict[int, str]:
    return {
        r["index"]: r["reason"] for r in map(json.loads, (out / "rejects.jsonl").read_text().splitlines())
    }


def test_duplicate_ids_are_counted_and_the_records_written(tmp_path: Path, tiny_checkpoint, capsys) -> None:
    ids = [1, "1", "000000033471", 7, "000000033471", "oc-9", 7, None, "oc-9", 8]  # mix665k mixes both
    records = []
    for i, record_id in enumerate(ids):
        record = conv(f"Question {i}?", f"answer {i}", placeholder=False)
        if record_id is not None:
            record["id"] = record_id
        records.append(record)
    path = tmp_path / "mix.json"
    path.write_text(json.dumps(records, indent=2))
    assert main(["validate", str(path), *_model_args(tiny_checkpoint)]) == 0
    out = " ".join(capsys.readouterr().out.split())  # rich wraps long lines
    assert "10 records: 10 usable, 0 rejected" in out
    assert "duplicate ids: 4 (e.g. '1', '000000033471', 7, 'oc-9'); those records are still used" in out
    assert (
        main(["convert", str(path), "--output-dir", str(tmp_path / "out"), *_model_args(tiny_checkpoint)])
        == 0
    )
    manifest = json.loads((tmp_path / "out" / "manifest.json").read_text())
    assert manifest["records"] == {"input": 10, "written": 10, "rejected": 0, "repaired": 0}
    assert manifest["duplicate_ids"] == {"count": 4, "examples": ["1", "000000033471", 7, "oc-9"]}
    assert "duplicate ids" in capsys.readouterr().out


def _big_jsonl(path: Path) -> None:
    lines = [conv("First?", "one", placeholder=False), conv("Second?", "word " * 640_000, placeholder=False)]
    lines.append(conv("Third?", "three", placeholder=False))
    path.write_text("\n".join(json.dumps(r) for r in lines) + "\n")


def test_a_record_over_the_limit_is_rejected_unread(tmp_path: Path, tiny_checkpoint) -> None:
    path = tmp_path / "big.jsonl"
    _big_jsonl(path)  # record 1 is 3.2 MB
    items = list(record_items(RecordFile(path)))
    assert [len(item.raw) > 0 for item in items] == [True, False, True]  # never read, only its size
    assert items[1].reason == "record_too_large"
    out = tmp_path / "out"
    assert main(["convert", str(path), "--output-dir", str(out), *_model_args(tiny_checkpoint)]) == 0
    assert _rejects(out) == {1: "record_too_large"}
    assert json.loads((out / "manifest.json").read_text())["records"]["written"] == 2
    assert main(["validate", str(path), "--max-record-bytes", "4M", *_model_args(tiny_checkpoint)]) == 0


def test_a_shard_member_over_the_limit_is_rejected_unread(tmp_path: Path, tiny_checkpoint, capsys) -> None:
    shards = tmp_path / "shards"
    shards.mkdir()
    writer = TarShardWriter(shards / "shard-000000.tar")
    writer.write("000000000", {"json": json.dumps(conv("Small?", "yes", placeholder=False)).encode()})
    writer.write("000000001", {"json": json.dumps(conv("Big?", "x" * (3 << 20), placeholder=False)).encode()})
    writer.close()
    samples = list(read_tar_samples(shards / "shard-000000.tar", {"json": 1 << 20}))
    assert "json" not in samples[1] and samples[1]["__oversized__"]["json"] > 3 << 20
    assert main(["validate", str(shards), *_model_args(tiny_checkpoint)]) == 0
    out = capsys.readouterr().out
    assert "2 records: 1 usable, 1 rejected" in out and "record_too_large" in out


@pytest.fixture
def laion(tmp_path: Path) -> Path:
    """Two img2dataset shards: 3 and 2 captioned images."""
    folder = tmp_path / "laion"
    folder.mkdir()
    write_shard(folder, 0, ["a red square", "a redder square", "a square, red"])
    write_shard(folder, 1, ["crimson", "scarlet"])
    assert sorted(p.name for p in folder.iterdir()) == [
        "00000.parquet",
        "00000.tar",
        "00000_stats.json",
        "00001.parquet",
        "00001.tar",
        "00001_stats.json",
    ]
    return folder


def _laion(folder: Path, *extra: str) -> int:
    return main(["laion", str(folder), "--processes", "1", *extra])


def test_members_in_a_folder_are_one_sample_in_check_and_out(laion: Path, tmp_path: Path, capsys) -> None:
    repack(laion / "00000.tar", rename=lambda n: f"sub/{n}" if n.startswith("000000001") else n)
    assert _laion(laion, "--check") == 0
    assert "5 samples: 5 usable, 0 rejected" in capsys.readouterr().out
    out = tmp_path / "out"
    for _ in range(2):  # the rerun finds the finished conversion
        assert _laion(laion, "--output-dir", str(out)) == 0
    keys = [s["__key__"] for p in sorted(out.glob("*.tar")) for s in read_tar_samples(p)]
    assert keys == ["000000000", "sub_000000001", "000000002", "000010000", "000010001"]
    assert json.loads((out / "manifest.json").read_text())["records"] == {
        "input": 5,
        "written": 5,
        "rejected": 0,
        "repaired": 0,
    }


def test_interleaved_members_are_grouped_by_key(laion: Path, tmp_path: Path, capsys) -> None:
    by_ext = lambda names: sorted(names, key=lambda n: (n.split(".", 1)[1], n))  # noqa: E731
    repack(laion / "00001.tar", order=by_ext)  # 000010000.jpg 000010001.jpg 000010000.json ...
    with tarfile.open(laion / "00001.tar") as tar:
        assert tar.getnames()[:2] == ["000010000.jpg", "000010001.jpg"]
    assert _laion(laion, "--check") == 0
    assert "5 samples: 5 usable, 0 rejected" in capsys.readouterr().out
    samples = list(read_tar_samples(laion / "00001.tar"))
    assert [(s["__key__"], sorted(s)) for s in samples] == [
        (k, ["__key__", "jpg", "json", "txt"]) for k in ("000010000", "000010001")
    ]
    assert [s["txt"] for s in samples] == [b"crimson", b"scarlet"]


def test_members_too_far_apart_are_a_counted_reject(tmp_path: Path) -> None:
    path = tmp_path / "spread.tar"
    with tarfile.open(path, "w") as tar:
        for name in ("a.jpg", "b.jpg", "c.jpg", "a.txt"):
            info = tarfile.TarInfo(name)
            info.size = 1000
            tar.addfile(info, io.BytesIO(b"x" * 1000))
    samples = list(read_tar_samples(path, max_pending_bytes=2500))
    assert [s["__key__"] for s in samples] == ["a", "a", "b", "c"]
    assert samples[1]["__reason__"] == "sample_incomplete" and "re-pack the shard" in samples[1]["__error__"]
    assert set(samples[0]) == {"__key__", "jpg"}


def test_stats_and_inspect_read_caption_shards_as_training_does(
    laion: Path, tmp_path: Path, tiny_checkpoint, capsys
) -> None:
    out = tmp_path / "out"
    assert _laion(laion, "--output-dir", str(out)) == 0
    capsys.readouterr()
    for folder in (laion, out):  # img2dataset's own output, and what `laion --out` wrote
        plot = tmp_path / f"{folder.name}.png"
        argv = ["stats", str(folder), "--plot", str(plot), *_model_args(tiny_checkpoint)]
        assert main(argv) == 0
        assert "5 usable samples (0 rejected)" in capsys.readouterr().out
        assert main(["validate", str(folder), *_model_args(tiny_checkpoint)]) == 0
        assert "5 records: 5 usable, 0 rejected" in capsys.readouterr().out
    assert main(["inspect", str(out), "--index", "4", "--model-path", str(tiny_checkpoint)]) == 0
    shown = capsys.readouterr().out
    assert "scarlet" in shown and "48x32" in shown
    from yivl.data.captions import DEFAULT_CAPTION_PROMPTS, _stable_hash

    prompt = DEFAULT_CAPTION_PROMPTS[_stable_hash("000010001") % len(DEFAULT_CAPTION_PROMPTS)]
    assert prompt in shown
