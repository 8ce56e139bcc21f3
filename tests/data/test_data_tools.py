"""data_tools: conversion round trip, determinism, resume after a kill, full accounting of bad input."""

from __future__ import annotations

import json
import multiprocessing as mp
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from data_tools.cli import main
from tests.data.corpus import MAX_LENGTH, MAX_PIXELS, write_bad_corpus, write_good_corpus, write_images
from yivl.data.shards import TarShardWriter, read_tar_samples

ROOT = Path(__file__).resolve().parents[2]


def convert(src: Path, out: Path, model: Path, *extra: str) -> int:
    argv = ["convert", str(src), "--output-dir", str(out), "--model-path", str(model), "--processes", "1"]
    argv += ["--max-pixels", str(MAX_PIXELS), "--max-length", str(MAX_LENGTH), *extra]
    return main(argv)


def shard_bytes(out: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(out.glob("*.tar"))}


@pytest.fixture(scope="module")
def good(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_good_corpus(tmp_path_factory.mktemp("good"), 40)


@pytest.fixture(scope="module")
def reference(tmp_path_factory: pytest.TempPathFactory, good: Path, tiny_checkpoint: Path) -> Path:
    """An uninterrupted conversion with 2 processes, small shards."""
    out = tmp_path_factory.mktemp("ref") / "out"
    assert convert(good, out, tiny_checkpoint, "--max-samples", "7", "--processes", "2") == 0
    return out


def test_shards_read_back_as_the_records(reference: Path, good: Path) -> None:
    records = [json.loads(line) for line in good.read_text().splitlines()]
    samples = [s for p in sorted(reference.glob("*.tar")) for s in read_tar_samples(p)]
    assert [json.loads(s["json"]) for s in samples] == records
    image_dir = good.parent
    for sample, record in zip(samples, records, strict=True):
        if "image" in record:  # RGB JPEG/PNG pass through byte for byte
            ext = Path(record["image"]).suffix[1:]
            assert sample[ext] == (image_dir / record["image"]).read_bytes()
        else:
            assert set(sample) == {"__key__", "json"}
    manifest = json.loads((reference / "manifest.json").read_text())
    assert manifest["records"] == {"input": 40, "written": 40, "rejected": 0, "repaired": 0}
    assert [s["samples"] for s in manifest["shards"]] == [7, 7, 7, 7, 7, 5]
    assert manifest["reconciled"] is True
    assert manifest["token_length"]["min"] > 64  # the 64 image features are counted


def test_output_does_not_depend_on_process_count(
    reference: Path, good: Path, tiny_checkpoint: Path, tmp_path
) -> None:
    out = tmp_path / "one"
    assert convert(good, out, tiny_checkpoint, "--max-samples", "7") == 0
    assert shard_bytes(out) == shard_bytes(reference)


def test_shards_are_bounded_by_bytes(good: Path, tiny_checkpoint: Path, tmp_path: Path) -> None:
    out = tmp_path / "small"
    assert convert(good, out, tiny_checkpoint, "--max-bytes", "8K") == 0
    sizes = [p.stat().st_size for p in out.glob("*.tar")]
    assert len(sizes) > 3 and max(sizes) <= 8 * 1024 + 10240  # tar pads to a 10 KiB record


def _crashing_convert(argv: list[str], stage: str) -> None:
    os.environ["YIVL_DATA_TOOLS_CRASH"] = stage
    main(argv)


@pytest.mark.parametrize("stage", ["mid_shard:2", "after_rename:1", "after_rejects:3"])
def test_resume_after_kill_equals_uninterrupted(
    stage: str, reference: Path, good: Path, tiny_checkpoint: Path, tmp_path: Path
) -> None:
    out = tmp_path / "out"
    argv = [
        "convert",
        str(good),
        "--output-dir",
        str(out),
        "--model-path",
        str(tiny_checkpoint),
        "--processes",
        "1",
    ]
    argv += ["--max-pixels", str(MAX_PIXELS), "--max-length", str(MAX_LENGTH), "--max-samples", "7"]
    child = mp.get_context("fork").Process(target=_crashing_convert, args=(argv, stage))
    child.start()
    child.join(60)
    assert child.exitcode == -9  # killed, not finished
    assert not (out / "manifest.json").exists()
    assert main(argv) == 0
    assert shard_bytes(out) == shard_bytes(reference)
    assert not list(out.glob("*.tmp"))
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["records"] == {"input": 40, "written": 40, "rejected": 0, "repaired": 0}


def test_every_bad_input_is_accounted_for(tiny_checkpoint: Path, tmp_path: Path) -> None:
    src, expected = write_bad_corpus(tmp_path / "bad")
    out = tmp_path / "out"
    assert (
        convert(
            src,
            out,
            tiny_checkpoint,
            "--image-folder",
            str(src.parent / "images"),
            "--processes",
            "2",
            "--max-reject-fraction",
            "1",  # the corpus is mostly bad on purpose
        )
        == 0
    )
    rejects = [json.loads(line) for line in (out / "rejects.jsonl").read_text().splitlines()]
    got = {r["index"]: r["reason"] for r in rejects}
    assert got == {i: reason for i, reason in enumerate(expected) if reason}
    written = [int(s["__key__"]) for p in sorted(out.glob("*.tar")) for s in read_tar_samples(p)]
    assert written == [i for i, reason in enumerate(expected) if reason is None]
    manifest = json.loads((out / "manifest.json").read_text())
    n_bad = sum(r is not None for r in expected)
    assert manifest["records"] == {
        "input": len(expected),
        "written": len(expected) - n_bad,
        "rejected": n_bad,
        "repaired": 0,
    }
    assert manifest["images"]["reencoded"] == 4  # CMYK, 16-bit, palette, alpha convert instead of failing
    assert manifest["reconciled"] is True


def test_validate_reports_the_same_reasons(tiny_checkpoint: Path, tmp_path: Path, capsys) -> None:
    src, expected = write_bad_corpus(tmp_path / "bad")
    rejects = tmp_path / "rejects.jsonl"
    argv = [
        "validate",
        str(src),
        "--image-folder",
        str(src.parent / "images"),
        "--model-path",
        str(tiny_checkpoint),
    ]
    argv += ["--max-pixels", str(MAX_PIXELS), "--max-length", str(MAX_LENGTH), "--processes", "1"]
    assert main([*argv, "--rejects", str(rejects), "--max-reject-fraction", "1"]) == 0
    got = [json.loads(line)["reason"] for line in rejects.read_text().splitlines()]
    assert got == [r for r in expected if r]
    assert "placeholder_in_assistant" in capsys.readouterr().out


def test_stats_draws_a_png(reference: Path, tiny_checkpoint: Path, tmp_path: Path, capsys) -> None:
    plot = tmp_path / "stats.png"
    assert (
        main(
            [
                "stats",
                str(reference),
                "--model-path",
                str(tiny_checkpoint),
                "--plot",
                str(plot),
                "--processes",
                "1",
            ]
        )
        == 0
    )
    assert plot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    out = capsys.readouterr().out
    assert "40 usable samples" in out and "image width" in out


def test_inspect_shows_supervised_tokens_and_image_sizes(good: Path, tiny_checkpoint: Path, capsys) -> None:
    assert main(["inspect", str(good), "--model-path", str(tiny_checkpoint), "--index", "1"]) == 0
    out = capsys.readouterr().out
    assert "supervised" in out and "answer 1" in out
    assert "40x30" in out and "[3, 112, 112]" in out  # before and after processing


def test_user_errors_are_one_line(tmp_path: Path, tiny_checkpoint: Path, capsys) -> None:
    (tmp_path / "x.jsonl").write_text("{}\n")
    (tmp_path / "busy").mkdir()
    (tmp_path / "busy" / "file.txt").write_text("mine")
    cases = [
        [
            "convert",
            str(tmp_path / "x.jsonl"),
            "--output-dir",
            str(tmp_path / "o"),
            "--model-path",
            str(tmp_path / "no-model"),
        ],
        [
            "convert",
            str(tmp_path / "x.jsonl"),
            "--output-dir",
            str(tmp_path / "busy"),
            "--model-path",
            str(tiny_checkpoint),
        ],
        ["laion", str(tmp_path / "nothing-{0..3}.tar"), "--check"],
        ["inspect", str(tmp_path / "x.jsonl"), "--model-path", str(tiny_checkpoint), "--index", "5"],
    ]
    for argv in cases:
        with pytest.raises(SystemExit) as err:
            main(argv)
        assert err.value.code == 2
        message = capsys.readouterr().err
        assert message.startswith("error: ") and message.count("\n") == 1, message
    missing = [
        "convert",
        str(tmp_path / "missing.jsonl"),
        "--output-dir",
        str(tmp_path / "o"),
        "--model-path",
        "m",
    ]
    proc = subprocess.run(
        [sys.executable, "-m", "data_tools", *missing], cwd=ROOT, capture_output=True, text=True
    )
    assert proc.returncode == 2 and proc.stderr.startswith("error: ") and proc.stderr.count("\n") == 1
    assert "Traceback" not in proc.stderr


def test_changed_settings_refuse_to_resume(
    reference: Path, good: Path, tiny_checkpoint: Path, tmp_path
) -> None:
    out = tmp_path / "copy"
    shutil.copytree(reference, out)
    with pytest.raises(SystemExit) as err:
        convert(good, out, tiny_checkpoint, "--max-samples", "9")
    assert err.value.code == 2


def write_img2dataset(folder: Path) -> dict[str, str | None]:
    """Two img2dataset shards (+ a truncated one); returns the expected reason per key."""
    folder.mkdir(parents=True)
    images = folder.parent / "images"
    write_images(images)
    expected: dict[str, str | None] = {}
    plan = [
        ("good.jpg", "a red square", None),
        ("good.png", "a green thing", None),
        ("cmyk.jpg", "a cyan card", None),
        ("corrupt.jpg", "broken", "image_corrupt"),
        ("good.jpg", None, "caption_missing"),
        ("good.jpg", "x" * 300, "caption_length"),
        ("palette.png", "tiny blue", "image_too_small"),  # 20 px < --min-image-side 25
        (None, "no image", "sample_incomplete"),
    ]
    for s in range(2):
        writer = TarShardWriter(folder / f"{s:05d}.tar")
        for i, (image, caption, reason) in enumerate(plan):
            key = f"{s:05d}{i:04d}"
            members = {}
            if image:
                members[Path(image).suffix[1:]] = (images / image).read_bytes()
            if caption:
                members["txt"] = caption.encode()
            members["json"] = json.dumps({"key": key, "status": "success"}).encode()
            writer.write(key, members)
            expected[key] = reason
        writer.close()
        (folder / f"{s:05d}_stats.json").write_text(json.dumps({"successes": len(plan)}))
    return expected


def test_laion_filters_reshards_and_accounts(tiny_checkpoint: Path, tmp_path: Path, capsys) -> None:
    expected = write_img2dataset(tmp_path / "laion")
    out = tmp_path / "out"
    argv = ["laion", str(tmp_path / "laion"), "--output-dir", str(out), "--max-caption-chars", "200"]
    argv += [
        "--min-image-side",
        "25",
        "--model-path",
        str(tiny_checkpoint),
        "--processes",
        "2",
        "--max-samples",
        "3",
    ]
    # 10 of 16 rejected: over the default 5%, so the run fails, after writing everything it accounts for
    with pytest.raises(SystemExit) as stop:
        main(argv)
    assert stop.value.code == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "10 of 16 records rejected (62.5% > --max-reject-fraction=0.05)" in err
    rejects = {
        r["key"]: r["reason"] for r in map(json.loads, (out / "rejects.jsonl").read_text().splitlines())
    }
    assert rejects == {k: r for k, r in expected.items() if r}
    samples = [s for p in sorted(out.glob("*.tar")) for s in read_tar_samples(p)]
    assert [s["__key__"] for s in samples] == [k for k, r in expected.items() if r is None]
    assert all({"txt", "json"} <= set(s) for s in samples)
    manifest = json.loads((out / "manifest.json").read_text())
    assert (
        manifest["records"] == {"input": 16, "written": 6, "rejected": 10, "repaired": 0}
        and manifest["reconciled"]
    )
    assert manifest["img2dataset_successes"] == 16
    assert main([*argv, "--max-reject-fraction", "1"]) == 0  # accepted: the finished run is checked again


def test_laion_check_reports_without_writing(tiny_checkpoint: Path, tmp_path: Path, capsys) -> None:
    write_img2dataset(tmp_path / "laion")
    first = (tmp_path / "laion" / "00000.tar").read_bytes()
    (tmp_path / "laion" / "00002.tar").write_bytes(first[:1000])  # cut inside the first image
    argv = ["laion", str(tmp_path / "laion"), "--check", "--processes", "1"]
    with pytest.raises(SystemExit) as stop:  # most samples are bad on purpose: over the fraction
        main(argv)
    assert stop.value.code == 2
    assert "--max-reject-fraction=1" in capsys.readouterr().err
    assert main([*argv, "--max-reject-fraction", "1"]) == 0
    out = capsys.readouterr().out
    assert "shard_corrupt" in out and "caption_missing" in out
    assert not list(tmp_path.glob("**/manifest.json"))
