"""Limits and containment: image paths stay in their folder, only regular files of bounded size are read,
trailing bytes never reach a shard, oversized samples are rejected, and a dead worker never hangs a run."""

from __future__ import annotations

import io
import json
import os
import re
import shlex
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from data_tools.cli import main
from tests.data.corpus import MAX_LENGTH, MAX_PIXELS, conv, write_good_corpus
from yivl.data.image_files import read_image_file, resolve_image_path
from yivl.data.reasons import SampleRejected, SkipCounter
from yivl.data.shards import read_tar_samples

ROOT = Path(__file__).resolve().parents[2]
TIMEOUT_S = 120  # a hang fails the test instead of stalling the suite


def _png(size: tuple[int, int] = (8, 8), seed: int = 0) -> bytes:
    pixels = np.random.default_rng(seed).integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)
    buf = io.BytesIO()
    Image.fromarray(pixels).save(buf, format="PNG")
    return buf.getvalue()


def _jpeg() -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (16, 12), (10, 120, 200)).save(buf, format="JPEG", quality=90)
    return buf.getvalue()


TRAILER = b"\0" * (1 << 20)
# name in the record -> reason with default settings (None: written)
CASES = {
    "good.png": None,
    "../outside.png": "image_outside_folder",
    "<absolute>": "image_outside_folder",
    "link_out.png": "image_outside_folder",
    "link_in.png": None,
    "fifo.png": "image_not_regular_file",
    "sub": "image_not_regular_file",
    "sparse.png": "image_file_too_large",
    "trailer.png": None,
    "trailer.jpg": None,
    "/dev/zero": "image_outside_folder",
    "/proc/self/environ": "image_outside_folder",
}


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    """``data/images`` (the image folder) beside ``data/outside.png``, and the records file."""
    images = tmp_path / "data" / "images"
    (images / "sub").mkdir(parents=True)
    (tmp_path / "data" / "outside.png").write_bytes(_png(seed=1))
    (images / "good.png").write_bytes(_png(seed=2))
    (images / "sub" / "real.png").write_bytes(_png(seed=3))
    (images / "link_out.png").symlink_to("../outside.png")
    (images / "link_in.png").symlink_to("sub/real.png")
    os.mkfifo(images / "fifo.png")
    with open(images / "sparse.png", "wb") as f:
        f.truncate(2 << 30)  # 2 GiB, no blocks: rejected from its size, never read
    (images / "trailer.png").write_bytes(_png(seed=4) + TRAILER)
    (images / "trailer.jpg").write_bytes(_jpeg() + TRAILER)
    names = [str(tmp_path / "data" / "outside.png") if n == "<absolute>" else n for n in CASES]
    records = [conv(f"q{i}?", f"a{i}", name) for i, name in enumerate(names)]
    records.append(conv("text only?", "yes", placeholder=False))
    (tmp_path / "data" / "records.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    return tmp_path


class _Hung(Exception):
    pass


def _alarm(signum, frame):
    raise _Hung("the tool did not finish in time: something blocks")


def _tool(*argv: str) -> int:
    """``python -m data_tools ARGV`` in this process, under an alarm (a FIFO must not hang it)."""
    previous = signal.signal(signal.SIGALRM, _alarm)
    signal.alarm(TIMEOUT_S)
    try:
        return main(list(argv))
    except SystemExit as err:
        return int(err.code)
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)


def _model_args(model: Path, processes: int) -> list[str]:
    limits = ["--max-pixels", str(MAX_PIXELS), "--max-length", str(MAX_LENGTH)]
    # the corpora here are mostly bad on purpose: the reject-fraction stop is tested elsewhere
    return ["--model-path", str(model), *limits, "--processes", str(processes), "--max-reject-fraction", "1"]


def _rejects(path: Path) -> dict[int, str]:
    return {r["index"]: r["reason"] for r in map(json.loads, path.read_text().splitlines())}


EXPECTED = {i: reason for i, reason in enumerate(CASES.values()) if reason}


@pytest.mark.parametrize("processes", [1, 2])
def test_convert_contains_paths_and_reads_only_bounded_regular_files(
    tree: Path, tiny_checkpoint: Path, processes: int
) -> None:
    data, out = tree / "data", tree / "out"
    argv = ["convert", str(data / "records.jsonl"), "--image-folder", str(data / "images")]
    assert _tool(*argv, "--output-dir", str(out), *_model_args(tiny_checkpoint, processes)) == 0
    assert _rejects(out / "rejects.jsonl") == EXPECTED
    samples = {int(s["__key__"]): s for p in sorted(out.glob("*.tar")) for s in read_tar_samples(p)}
    assert sorted(samples) == [i for i in range(len(CASES) + 1) if i not in EXPECTED]
    images = data / "images"
    assert samples[0]["png"] == (images / "good.png").read_bytes()
    assert samples[4]["png"] == (images / "sub" / "real.png").read_bytes()  # a symlink inside is fine
    # the trailer is cut at the image's end: the member is the image alone and decodes the same
    assert samples[8]["png"] == _png(seed=4)
    assert samples[9]["jpg"] == _jpeg()
    for index, name in ((8, "trailer.png"), (9, "trailer.jpg")):
        member = next(v for k, v in samples[index].items() if k in ("png", "jpg"))
        with Image.open(io.BytesIO(member)) as a, Image.open(images / name) as b:
            assert a.tobytes() == b.tobytes()
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["images"] == {"passed_through": 2, "text_only": 1, "trimmed": 2}
    assert manifest["records"] == {"input": 13, "written": 5, "rejected": 8, "repaired": 0}
    assert manifest["reconciled"] is True
    assert max(p.stat().st_size for p in out.glob("*.tar")) < 1 << 20  # no 1 MiB trailer copied


def test_validate_gives_the_same_reasons_and_the_allow_option_reaches_outside(
    tree: Path, tiny_checkpoint: Path
) -> None:
    data = tree / "data"
    argv = ["validate", str(data / "records.jsonl"), "--image-folder", str(data / "images")]
    argv += _model_args(tiny_checkpoint, 2)
    assert _tool(*argv, "--rejects", str(tree / "strict.jsonl")) == 0
    assert _rejects(tree / "strict.jsonl") == EXPECTED
    assert _tool(*argv, "--rejects", str(tree / "allowed.jsonl"), "--allow-images-outside-folder") == 0
    allowed = {**EXPECTED, 1: None, 2: None, 3: None, 10: "image_not_regular_file", 11: "image_corrupt"}
    assert _rejects(tree / "allowed.jsonl") == {i: r for i, r in allowed.items() if r}


def test_max_image_bytes_applies_before_reading(tree: Path, tiny_checkpoint: Path) -> None:
    data = tree / "data"
    argv = ["validate", str(data / "records.jsonl"), "--image-folder", str(data / "images")]
    rejects = tree / "r.jsonl"
    assert (
        _tool(*argv, *_model_args(tiny_checkpoint, 1), "--max-image-bytes", "64K", "--rejects", str(rejects))
        == 0
    )
    assert _rejects(rejects) == {
        **EXPECTED,
        8: "image_file_too_large",
        9: "image_file_too_large",
    }  # 1 MiB trailers


def test_the_shared_helper_resolves_and_bounds(tree: Path) -> None:
    images = tree / "data" / "images"
    assert resolve_image_path(images, "link_in.png", "r") == (images / "sub" / "real.png").resolve()
    for name in (
        "../outside.png",
        str(tree / "data" / "outside.png"),
        "link_out.png",
        "sub/../../outside.png",
    ):
        with pytest.raises(SampleRejected, match="outside the image folder") as err:
            resolve_image_path(images, name, "r")
        assert err.value.reason == "image_outside_folder"
    # a sibling folder sharing the name prefix is outside too (no string-prefix comparison)
    (tree / "data" / "images2").mkdir()
    with pytest.raises(SampleRejected):
        resolve_image_path(images, "../images2/x.png", "r")
    assert resolve_image_path(images, "../outside.png", "r", allow_outside=True).name == "outside.png"
    for path, reason in (
        (images / "fifo.png", "image_not_regular_file"),
        ("/dev/zero", "image_not_regular_file"),
        (images / "sub", "image_not_regular_file"),
        (images / "sparse.png", "image_file_too_large"),
        (images / "missing.png", "image_missing"),
    ):
        with pytest.raises(SampleRejected) as err:
            read_image_file(path, "r")
        assert err.value.reason == reason, path
    # /proc files report size 0: the read itself is bounded
    with pytest.raises(SampleRejected) as err:
        read_image_file("/proc/self/environ", "r", max_bytes=4)
    assert err.value.reason == "image_file_too_large"


def test_a_sample_over_the_shard_limit_is_rejected_not_given_a_shard(
    tmp_path: Path, tiny_checkpoint: Path
) -> None:
    (tmp_path / "big.png").write_bytes(_png((96, 96), seed=5))  # ~27 KB of noise
    (tmp_path / "small.png").write_bytes(_png(seed=6))
    records = [conv("a?", "b", "small.png"), conv("c?", "d", "big.png"), conv("e?", "f", "small.png")]
    src = tmp_path / "r.jsonl"
    src.write_text("".join(json.dumps(r) + "\n" for r in records))
    out = tmp_path / "out"
    assert (
        _tool(
            "convert",
            str(src),
            "--output-dir",
            str(out),
            "--max-bytes",
            "16K",
            *_model_args(tiny_checkpoint, 1),
        )
        == 0
    )
    (reject,) = map(json.loads, (out / "rejects.jsonl").read_text().splitlines())
    assert (reject["index"], reject["reason"]) == (1, "sample_too_large")
    assert "over the shard limit --max-bytes=16384" in reject["detail"]
    written = [s["__key__"] for p in sorted(out.glob("*.tar")) for s in read_tar_samples(p)]
    assert written == ["000000000", "000000002"]
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["records"] == {"input": 3, "written": 2, "rejected": 1, "repaired": 0}
    assert manifest["reconciled"] is True


def test_a_killed_worker_stops_the_run_with_a_resume_command(tmp_path: Path, tiny_checkpoint: Path) -> None:
    src = write_good_corpus(tmp_path / "good", 40)
    reference = tmp_path / "reference"
    common = [*_model_args(tiny_checkpoint, 2), "--max-samples", "7"]
    assert _tool("convert", str(src), "--output-dir", str(reference), *common) == 0
    out = tmp_path / "out"
    env = {**os.environ, "PYTHONPATH": str(ROOT), "YIVL_DATA_TOOLS_WORKER_CRASH": "30"}
    cmd = [sys.executable, "-m", "data_tools", "convert", str(src), "--output-dir", str(out), *common]
    result = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=TIMEOUT_S)
    assert result.returncode == 2
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, result.stderr
    assert "Traceback" not in result.stderr
    match = re.fullmatch(
        r"error: worker process \d+ was killed by SIGKILL \(likely the out-of-memory killer: .*\); "
        r"(\d+) of 40 records are committed in (\d+) complete shards; resume with: (python -m data_tools .*)",
        lines[0],
    )
    assert match, lines[0]
    assert int(match.group(1)) == 7 * int(match.group(2)) <= 28
    resume = shlex.split(match.group(3))
    assert resume[:3] == ["python", "-m", "data_tools"]
    assert _tool(*resume[3:]) == 0
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["records"] == {"input": 40, "written": 40, "rejected": 0, "repaired": 0}
    assert manifest["reconciled"] is True
    shards = lambda d: {p.name: p.read_bytes() for p in sorted(d.glob("*.tar"))}  # noqa: E731
    assert shards(out) == shards(reference)


def test_training_sources_contain_image_paths(tree: Path, tokenizer) -> None:
    from yivl.data.encode import SampleEncoder
    from yivl.data.images import ImageProcessor
    from yivl.data.map_dataset import ConversationDataset
    from yivl.data.sources import JsonSource, WorkerInfo

    data = tree / "data"
    src, images = data / "records.jsonl", data / "images"
    strict = {i: r for i, r in EXPECTED.items() if r == "image_outside_folder"}
    skips = SkipCounter()
    items = list(JsonSource(src, images).items(0, "0", WorkerInfo(), skips, False, 0))
    assert sorted(int(item.key.split(":")[1]) for item in items) == [
        i for i in range(len(CASES) + 1) if i not in strict
    ]
    assert skips.counts() == {"image_outside_folder": len(strict)}
    link_in = next(item for item in items if item.key.endswith(":4"))
    assert link_in.image == (images / "sub" / "real.png").resolve()
    allowed = SkipCounter()
    assert (
        len(list(JsonSource(src, images, allow_outside=True).items(0, "0", WorkerInfo(), allowed, False, 0)))
        == 13
    )
    assert allowed.counts() == {}

    encoder = SampleEncoder(tokenizer, ImageProcessor(28), 4, 512)
    dataset = ConversationDataset(src, images, encoder)
    reasons = {}
    for i in range(len(CASES) + 1):
        try:
            dataset.encode(i)
        except SampleRejected as err:
            reasons[i] = err.reason
    assert reasons == EXPECTED  # the FIFO returns at once: opened non-blocking, refused by type
    # what training reads: __getitem__ skips and counts each reject (replacing it with the next record)
    # and the survey judged before the first step counts the same reasons, without opening anything
    reading = ConversationDataset(src, images, encoder, SkipCounter())
    served = {int(reading[i].key.split(":")[1]) for i in range(len(CASES) + 1)}
    assert served == {i for i in range(len(CASES) + 1) if i not in EXPECTED}
    assert set(reading.skips.counts()) == set(EXPECTED.values())
    survey = ConversationDataset(src, images, encoder).survey()
    assert survey.rejected == Counter(EXPECTED.values()) and survey.kept == len(CASES) + 1 - len(EXPECTED)
    outside = ConversationDataset(src, images, encoder, allow_outside=True)
    assert outside.encode(1).pixel_values.shape == (1, 3, 28, 28)


def test_evaluation_task_files_contain_image_paths(tree: Path) -> None:
    from yivl.errors import YivlError
    from yivl.evaluation.sources import ImageFiles, read_task_file

    folder = tree / "data" / "images"
    cases = {
        "../outside.png": "image_outside_folder",
        "link_out.png": "image_outside_folder",
        "fifo.png": "not a regular file",
        "sparse.png": "image_file_too_large",
    }
    for name, message in cases.items():
        path = folder / "task.jsonl"
        path.write_text(json.dumps({"id": 1, "question": "q", "answer": "a", "image": name}) + "\n")
        with pytest.raises(YivlError, match=message):
            read_task_file(path)
    path.write_text(json.dumps({"id": 1, "question": "q", "image": "link_in.png"}) + "\n")
    (record,) = read_task_file(path)
    assert record.image.read() == (folder / "sub" / "real.png").read_bytes()
    path.write_text(json.dumps({"id": 1, "question": "q", "image": "../outside.png"}) + "\n")
    (record,) = read_task_file(path, images=ImageFiles(allow_outside=True))
    assert record.image.read() == (tree / "data" / "outside.png").read_bytes()


def _square_or_die(x: int) -> int:
    if x == 50:
        os.kill(os.getpid(), 9)
    if x == 70:
        time.sleep(30)  # a stuck worker (a hung network mount)
    return x * x


def _noop() -> None:
    return None


def test_ordered_map_is_ordered_bounded_and_never_waits_forever() -> None:
    from itertools import count, islice

    from data_tools.parallel import WorkerDied, WorkerStalled, ordered_map

    # an endless input: only a bounded window is ever taken from it
    assert list(islice(ordered_map(_square_or_die, count(100), 2, _noop), 300)) == [
        x * x for x in range(100, 400)
    ]
    with pytest.raises(WorkerDied, match=r"worker process \d+ was killed by SIGKILL"):
        list(ordered_map(_square_or_die, range(200), 2, _noop, chunksize=4))
    with pytest.raises(WorkerStalled, match="no worker finished a chunk in 2 s"):
        list(ordered_map(_square_or_die, range(60, 80), 2, _noop, chunksize=4, stall_timeout_s=2))
