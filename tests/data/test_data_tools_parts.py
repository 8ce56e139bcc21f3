"""data_tools --part I/N + merge: N jobs of a SLURM array give what one job gives, byte for byte.

Compared with a one-job run: the sample stream (every tar member's name and bytes, shard after shard in
manifest order), ``rejects.jsonl`` byte for byte, and the manifest except where the shards end (each
part closes its last shard), which is by construction.
"""

from __future__ import annotations

import json
import multiprocessing as mp
import os
import shutil
import tarfile
from pathlib import Path

import pytest

from data_tools.cli import main
from tests.data.corpus import MAX_LENGTH, MAX_PIXELS
from tests.data.img2dataset_layout import write_shard
from tests.data.public_formats import mix665k_records, write_public

BY_CONSTRUCTION = {"shards", "total_bytes", "parts"}  # where shards end; the merged manifest's part count


def members(out: Path) -> list[tuple[str, bytes]]:
    """Every member of every shard, in manifest order, and the shard files in sorted order agree."""
    names = [s["name"] for s in json.loads((out / "manifest.json").read_text())["shards"]]
    assert names == sorted(p.name for p in out.glob("*.tar"))  # what training globs reads, in order
    stream = []
    for name in names:
        with tarfile.open(out / name) as tar:
            stream += [(m.name, tar.extractfile(m).read()) for m in tar.getmembers()]
    return stream


def manifest(out: Path) -> dict:
    return json.loads((out / "manifest.json").read_text())


def assert_same_as_one_job(merged: Path, one: Path, parts: int) -> None:
    assert members(merged) == members(one)
    assert (merged / "rejects.jsonl").read_bytes() == (one / "rejects.jsonl").read_bytes()
    got, want = manifest(merged), manifest(one)
    assert {k: v for k, v in got.items() if k not in BY_CONSTRUCTION} == {
        k: v for k, v in want.items() if k not in BY_CONSTRUCTION
    }
    assert got["parts"] == parts and got["reconciled"] is True


@pytest.fixture(scope="module")
def mix(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """llava_v1_5_mix665k.json-shaped: its 20 public-shaped records, 3 rejects and 3 repeated ids."""
    folder = tmp_path_factory.mktemp("mix")
    path = write_public(folder, "llava_v1_5_mix665k.json", mix665k_records())
    records = json.loads(path.read_text())
    missing = {**records[0], "id": "gone", "image": "coco/train2017/000000999999.jpg"}
    empty = {**records[17], "conversations": [{**t, "value": ""} for t in records[17]["conversations"]]}
    records[4:4] = [missing, {**records[1]}]  # image_missing; a repeated id
    records[13:13] = [empty, "not a record"]  # reply_empty (and its id repeats); not_an_object
    records.append({**records[3]})  # OCR-VQA's integer id again
    path.write_text(json.dumps(records, indent=2))
    return path


def convert_argv(src: Path, out: Path, model: Path, *extra: str) -> list[str]:
    argv = ["convert", str(src), "--image-folder", str(src.parent / "images"), "--output-dir", str(out)]
    argv += ["--model-path", str(model), "--processes", "1", "--max-samples", "4"]
    return [*argv, "--max-pixels", str(MAX_PIXELS), "--max-length", str(MAX_LENGTH), *extra]


@pytest.fixture(scope="module")
def one_job(tmp_path_factory: pytest.TempPathFactory, mix: Path, tiny_checkpoint: Path) -> Path:
    out = tmp_path_factory.mktemp("one") / "out"
    assert main(convert_argv(mix, out, tiny_checkpoint, "--max-reject-fraction", "1")) == 0
    return out


def _crashing(argv: list[str]) -> None:
    os.environ["YIVL_DATA_TOOLS_CRASH"] = "mid_shard:1"
    main(argv)


def test_three_convert_parts_merge_into_the_one_job_output(
    mix: Path, one_job: Path, tiny_checkpoint: Path, tmp_path: Path
) -> None:
    out = tmp_path / "out"
    part2 = convert_argv(mix, out, tiny_checkpoint, "--part", "2/3")
    child = mp.get_context("fork").Process(target=_crashing, args=(part2,))
    child.start()
    child.join(60)
    assert child.exitcode == -9  # part 2 killed mid-shard; it resumes as a one-job run does
    for part in ("3/3", "1/3"):  # any order, as array tasks finish
        assert main(convert_argv(mix, out, tiny_checkpoint, "--part", part)) == 0
    assert main(part2) == 0
    slices = [manifest(out / "parts" / f"part-{i}-of-3")["records"]["input"] for i in (1, 2, 3)]
    assert slices == [8, 8, 9]  # 25 records, contiguous slices [0, 8) [8, 16) [16, 25)
    assert main(["merge", "--output-dir", str(out), "--max-reject-fraction", "1"]) == 0
    assert_same_as_one_job(out, one_job, 3)
    want = manifest(one_job)
    assert want["records"] == {"input": 25, "written": 22, "rejected": 3, "repaired": 2}
    assert want["duplicate_ids"] == {"count": 3, "examples": ["000000052846", "hRPXBBT_0", 71019]}
    assert len(manifest(out)["shards"]) == 7 and len(want["shards"]) == 6  # each part ends a shard
    first = members(out)
    assert main(["merge", "--output-dir", str(out), "--max-reject-fraction", "1"]) == 0
    assert members(out) == first  # merging again changes nothing


def test_merge_applies_the_reject_rule_to_the_whole(
    mix: Path, tiny_checkpoint: Path, tmp_path: Path, capsys
) -> None:
    out = tmp_path / "out"
    for part in ("1/2", "2/2"):  # parts pass at the default fraction: the rule waits for merge
        assert main(convert_argv(mix, out, tiny_checkpoint, "--part", part)) == 0
    with pytest.raises(SystemExit) as stop:
        main(["merge", "--output-dir", str(out)])
    assert stop.value.code == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "3 of 25 records rejected (12.0% > --max-reject-fraction=0.05)" in err
    assert manifest(out)["records"]["rejected"] == 3  # written first, as a one-job run does


CAPTIONS = [
    ["a red bus", "x" * 90, "a cat on a mat"],  # x*90: caption_length over --max-caption-chars 80
    ["two dogs", "", "a tree"],  # "": caption_missing
    ["the sea", "a boat"],
    ["a house", "y" * 100, "a bird", "a car"],
]


@pytest.fixture(scope="module")
def img2dataset(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("laion") / "laion"
    folder.mkdir()
    for shard_id, captions in enumerate(CAPTIONS):
        write_shard(folder, shard_id, captions)
    return folder


def laion_argv(src: Path, out: Path, *extra: str) -> list[str]:
    argv = ["laion", str(src), "--output-dir", str(out), "--max-caption-chars", "80", "--processes", "1"]
    return [*argv, "--max-samples", "2", "--max-reject-fraction", "1", *extra]


@pytest.mark.parametrize(
    ("parts", "samples"),
    [(3, [3, 3, 6]), (5, [0, 3, 3, 2, 4])],  # 4 input shards: 1, 1, 2 of them; 0, 1, 1, 1, 1
)
def test_laion_parts_merge_into_the_one_job_output(
    parts: int, samples: list[int], img2dataset: Path, tmp_path: Path
) -> None:
    one, out = tmp_path / "one", tmp_path / "out"
    assert main(laion_argv(img2dataset, one)) == 0
    for i in range(1, parts + 1):
        assert main(laion_argv(img2dataset, out, "--part", f"{i}/{parts}")) == 0
    got = [manifest(out / "parts" / f"part-{i}-of-{parts}")["records"]["input"] for i in range(1, parts + 1)]
    assert got == samples
    assert main(["merge", "--output-dir", str(out), "--max-reject-fraction", "1"]) == 0
    assert_same_as_one_job(out, one, parts)
    rejects = [json.loads(line) for line in (out / "rejects.jsonl").read_text().splitlines()]
    assert [(r["index"], r["reason"]) for r in rejects] == [
        (1, "caption_length"),
        (4, "caption_missing"),
        (9, "caption_length"),
    ]
    assert manifest(out)["img2dataset_successes"] == 12 and manifest(out)["records"]["written"] == 9


def error_line(argv: list[str], capsys) -> str:
    with pytest.raises(SystemExit) as stop:
        main(argv)
    assert stop.value.code == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("error: ")
    return err.strip().removeprefix("error: ")


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("0/3", "--part 0/3: parts are numbered 1 to 3; for a SLURM array use --array=1-N with --part"),
        ("4/3", "--part 4/3: parts are numbered 1 to 3;"),
        ("1/0", "--part 1/0: the number of parts must be at least 1; pass --part I/N with N >= 1"),
        ("half", "--part half: expected I/N with parts numbered from 1 (e.g. 2/8), or auto"),
        ("auto", "--part auto needs a SLURM array job (SLURM_ARRAY_TASK_ID, SLURM_ARRAY_TASK_MIN,"),
    ],
)
def test_wrong_part_values_are_one_line(
    value: str, message: str, img2dataset: Path, tmp_path: Path, capsys, monkeypatch
) -> None:
    for name in [n for n in os.environ if n.startswith("SLURM_ARRAY")]:
        monkeypatch.delenv(name)
    assert error_line(laion_argv(img2dataset, tmp_path / "out", "--part", value), capsys).startswith(message)
    assert not (tmp_path / "out").exists()


def test_part_auto_reads_the_slurm_array(monkeypatch, img2dataset: Path, tmp_path: Path, capsys) -> None:
    array = {"SLURM_ARRAY_TASK_ID": "0", "SLURM_ARRAY_TASK_MIN": "0", "SLURM_ARRAY_TASK_MAX": "3"}
    for name, value in {**array, "SLURM_ARRAY_TASK_COUNT": "4"}.items():
        monkeypatch.setenv(name, value)
    assert main(laion_argv(img2dataset, tmp_path / "out", "--part", "auto")) == 0  # --array=0-3: task 0
    assert [p.name for p in (tmp_path / "out" / "parts").iterdir()] == ["part-1-of-4"]
    monkeypatch.setenv("SLURM_ARRAY_TASK_COUNT", "2")  # --array=0-3:3 runs tasks 0 and 3
    assert error_line(laion_argv(img2dataset, tmp_path / "o2", "--part", "auto"), capsys) == (
        "--part auto: the SLURM array 0-3 has 2 tasks, not one per index; submit with a contiguous "
        "--array=1-N (no step, no list) or pass --part I/N"
    )


def test_bad_splits_and_merges_are_one_line(img2dataset: Path, tmp_path: Path, capsys) -> None:
    out = tmp_path / "out"
    assert error_line(["merge", "--output-dir", str(out)], capsys) == (
        f"{out} holds no parts ({out}/parts/part-I-of-N); run convert or laion with --part I/N "
        f"--output-dir {out} first, then merge"
    )
    for part in ("1/3", "3/3"):
        assert main(laion_argv(img2dataset, out, "--part", part)) == 0
    assert error_line(laion_argv(img2dataset, out, "--part", "2/4"), capsys) == (
        f"{out} already holds parts of a 3-part split, this is part 2/4; run every part with "
        f"--part I/3, or delete {out}/parts to start a split into 4 parts"
    )
    assert error_line(["merge", "--output-dir", str(out)], capsys) == (
        f"{out}: part 2 of 3 is missing (no {out}/parts/part-2-of-3); run the same command with "
        "--part 2/3, then merge again"
    )
    assert main(laion_argv(img2dataset, out, "--part", "2/3", "--min-caption-chars", "3")) == 0
    assert error_line(["merge", "--output-dir", str(out)], capsys) == (
        f"{out}: part 2 of 3 was made with other settings or input than part 1 (filters differ); rerun "
        "it with part 1's options and --overwrite --part 2/3, then merge again"
    )
    assert main(laion_argv(img2dataset, out, "--part", "2/3", "--overwrite")) == 0
    (out / "parts" / "part-3-of-3" / "manifest.json").unlink()  # as if killed: no manifest yet
    assert error_line(["merge", "--output-dir", str(out)], capsys) == (
        f"{out}: part 3 of 3 has not finished ({out}/parts/part-3-of-3 has no manifest.json: interrupted "
        "or still running); rerun it with --part 3/3 to resume, then merge again"
    )
    assert main(laion_argv(img2dataset, out, "--part", "3/3")) == 0  # resumes: checks, writes the manifest
    assert main(["merge", "--output-dir", str(out), "--max-reject-fraction", "1"]) == 0
    shutil.copytree(out / "parts" / "part-1-of-3", out / "parts" / "part-1-of-2")
    assert error_line(["merge", "--output-dir", str(out)], capsys).startswith(
        f"{out} holds parts of 2 and 3-part splits; delete the folders of the split you do not want"
    )


def test_a_part_refuses_a_one_job_output(img2dataset: Path, tmp_path: Path, capsys) -> None:
    one = tmp_path / "one"
    assert main(laion_argv(img2dataset, one)) == 0
    assert error_line(laion_argv(img2dataset, one, "--part", "1/2"), capsys) == (
        f"{one} is not empty and holds no parts (a one-job conversion or other files); "
        "give the parts an empty --output-dir"
    )
