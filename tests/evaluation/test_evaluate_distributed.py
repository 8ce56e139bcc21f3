"""evaluate.py on 2 processes (torchrun and devices=2): the same records file and summary as one
process, a killed rank reported in one line, and resume (same or other process count)."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.evaluation.task_files import (
    ROOT,
    eval_config,
    one_thread,  # noqa: F401 - fixture
    task_records,
    too_long_record,
    without_run_details,
    write_images,
    write_jsonl,
)
from yivl.errors import YivlError
from yivl.evaluation.ranks import RESUME, World, rank_device, wait_for, world_from_env
from yivl.evaluation.run import run

TIMEOUT_S = 420
"""Bound of one 2-process command on a loaded 2-core machine (they take 30-90 s)."""
SETTINGS = (
    "progress=false",
    "threads=null",
    "num_workers=0",
    "bootstrap_iters=20",
    "chart=false",
    "batch_size=2",
    "batch_check=2",
    "task_options.vqa.max_new_tokens=3",
    "task_options.mcq.max_new_tokens=3",
    "task_options.mcq.mode=both",
)


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """vqa (24 records), mcq and loss (6 each), each with one record that does not fit the context."""
    folder = tmp_path_factory.mktemp("dist_data")
    images = write_images(folder, 6)
    write_jsonl(folder / "vqa.jsonl", [*task_records("vqa", images, n=24), too_long_record("vqa", images)])
    for kind in ("mcq", "loss"):
        write_jsonl(folder / f"{kind}.jsonl", [*task_records(kind, images), too_long_record(kind, images)])
    return folder


def tasks_of(data: Path) -> list[str]:
    return [f"vqa:{data / 'vqa.jsonl'}", f"mcq:{data / 'mcq.jsonl'}", f"loss:{data / 'loss.jsonl'}"]


def one_process(checkpoint: Path, out: Path, data: Path, *extra: str) -> dict:
    return run(eval_config(checkpoint, out, tasks_of(data), *SETTINGS, *extra))


def command(launcher: list[str], checkpoint: Path, out: Path, data: Path, *extra: str) -> list[str]:
    tasks = "tasks=[" + ",".join(tasks_of(data)) + "]"
    return [
        *launcher,
        "evaluate.py",
        f"model.path={checkpoint}",
        f"output_dir={out}",
        tasks,
        *SETTINGS,
        *extra,
    ]


TORCHRUN = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2"]
PYTHON = [sys.executable]


def environment() -> dict[str, str]:
    """The worktree's code on the path; one torch thread per process (as torchrun sets it)."""
    return os.environ | {"PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}


def start(cmd: list[str]) -> subprocess.Popen:
    return subprocess.Popen(
        cmd, cwd=ROOT, env=environment(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )


def finish(proc: subprocess.Popen) -> subprocess.CompletedProcess:
    try:
        out, err = proc.communicate(timeout=TIMEOUT_S)
    except subprocess.TimeoutExpired:
        proc.kill()
        out, err = proc.communicate()
        pytest.fail(f"evaluate.py did not finish within {TIMEOUT_S} s: {err[-2000:]}")
    return subprocess.CompletedProcess(proc.args, proc.returncode, out, err)


def records(out: Path, task: str) -> list[dict]:
    """The task's records in file order, without the batch's timing."""
    lines = (out / f"samples_{task}.jsonl").read_text().splitlines()
    return [{k: v for k, v in json.loads(line).items() if k != "batch_s"} for line in lines]


def same_outputs(out: Path, reference: Path) -> None:
    """Same summary (timing and date aside) and the same records, in the same order."""
    ours, theirs = (json.loads((d / "summary.json").read_text()) for d in (out, reference))
    assert without_run_details(ours) == without_run_details(theirs)
    for task in ("vqa", "mcq", "loss"):
        assert records(out, task) == records(reference, task)
    assert not (out / "ranks").exists()


@pytest.mark.slow
@pytest.mark.usefixtures("one_thread")
def test_two_processes_write_what_one_process_writes(
    tiny_checkpoint: Path, data_dir: Path, tmp_path: Path
) -> None:
    one_process(tiny_checkpoint, tmp_path / "one", data_dir)
    done = finish(start(command(PYTHON, tiny_checkpoint, tmp_path / "two", data_dir, "devices=2")))
    assert done.returncode == 0, done.stderr[-2000:]
    same_outputs(tmp_path / "two", tmp_path / "one")
    summary = json.loads((tmp_path / "two" / "summary.json").read_text())
    assert summary["timing"]["processes"] == 2 and summary["timing"]["samples"] == 36
    assert summary["batch_check"]["vqa"]["checked"] == 2  # run by rank 0 over the merged records
    assert summary["tasks"]["loss"]["n"] == 6 and summary["tasks"]["loss"]["n_skipped"] == 1


@pytest.mark.slow
@pytest.mark.usefixtures("one_thread")
def test_a_killed_rank_is_reported_and_the_run_resumes(
    tiny_checkpoint: Path, data_dir: Path, tmp_path: Path
) -> None:
    out = tmp_path / "killed"
    proc = start(command(TORCHRUN, tiny_checkpoint, out, data_dir))
    partial, deadline = out / "ranks" / "samples_vqa.rank1.jsonl", time.monotonic() + TIMEOUT_S
    while not (partial.is_file() and partial.read_text().count("\n") >= 2):
        assert proc.poll() is None and time.monotonic() < deadline, "rank 1 never wrote two vqa records"
        time.sleep(0.05)
    pid = json.loads((out / "ranks" / "rank1.json").read_text())["pid"]
    os.kill(pid, signal.SIGKILL)
    killed = finish(proc)
    assert killed.returncode != 0
    errors = [line for line in killed.stderr.splitlines() if line.startswith("error: ")]
    # rank 0 hears of it from torchrun's SIGTERM, or finds it while waiting for rank 1's share
    said = (
        rf"error: rank (0 stopped: rank 1 died|1 stopped before finishing task \w+) \(process {pid} is gone\)"
    )
    assert len(errors) == 1 and re.fullmatch(f"{said}; {RESUME}", errors[0]), killed.stderr[-2000:]
    assert not (out / "summary.json").exists()
    resumed = finish(start(command(TORCHRUN, tiny_checkpoint, out, data_dir, "resume=true")))
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    one_process(tiny_checkpoint, tmp_path / "one", data_dir)
    same_outputs(out, tmp_path / "one")
    summary = json.loads((out / "summary.json").read_text())
    assert summary["timing"]["resumed"] and summary["timing"]["tasks"]["vqa"]["samples"] < 25


@pytest.mark.usefixtures("one_thread")
def test_one_process_resumes_the_partial_files_of_two(
    tiny_checkpoint: Path, data_dir: Path, tmp_path: Path
) -> None:
    """A run of 2 killed mid-task (records in both ranks' files, one torn) continues on 1 process."""
    reference = tmp_path / "one"
    tasks = [f"vqa:{data_dir / 'vqa.jsonl'}"]
    full = run(eval_config(tiny_checkpoint, reference, tasks, *SETTINGS))
    out = tmp_path / "two"
    shutil.copytree(reference, out)
    lines = (out / "samples_vqa.jsonl").read_text().splitlines(keepends=True)
    (out / "samples_vqa.jsonl").unlink()
    (out / "summary.json").unlink()
    (out / "ranks").mkdir()
    (out / "ranks" / "samples_vqa.rank0.jsonl").write_text("".join(lines[0:8:2]))
    (out / "ranks" / "samples_vqa.rank1.jsonl").write_text("".join(lines[1:8:2]) + lines[9][:20])
    resumed = run(eval_config(tiny_checkpoint, out, tasks, *SETTINGS, "resume=true"))
    assert without_run_details(resumed) == without_run_details(full)
    assert resumed["timing"]["tasks"]["vqa"]["samples"] == 25 - 8
    assert [json.loads(line)["id"] for line in lines] == [r["id"] for r in records(out, "vqa")]
    assert records(out, "vqa") == records(reference, "vqa")
    assert not (out / "ranks").exists()


def test_a_dead_or_late_rank_ends_the_wait_in_one_line(tmp_path: Path) -> None:
    world = World(0, 2, launch="abc")
    (tmp_path / "ranks").mkdir()
    gone = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True
    )
    beat = {"pid": int(gone.stdout), "host": socket.gethostname(), "launch": "abc"}
    (tmp_path / "ranks" / "rank1.json").write_text(json.dumps(beat))
    with pytest.raises(YivlError) as err:
        wait_for(tmp_path, world, "vqa", lambda: [1], 60)
    assert (
        str(err.value)
        == f"rank 1 stopped before finishing task vqa (process {beat['pid']} is gone); {RESUME}"
    )
    (tmp_path / "ranks" / "rank1.json").write_text(json.dumps(beat | {"pid": os.getpid()}))
    started = time.monotonic()
    with pytest.raises(YivlError) as err:
        wait_for(tmp_path, world, "vqa", lambda: [1], 0.3)
    assert time.monotonic() - started < 5
    assert str(err.value) == (
        f"rank 1 has not finished task vqa 0.3 s after rank 0 did (rank_timeout_s); {RESUME}"
    )
    (tmp_path / "ranks" / "rank1.json").write_text(json.dumps(beat | {"launch": "older"}))
    with pytest.raises(YivlError, match=r"^rank 1 stopped before finishing task vqa \(it never started\)"):
        wait_for(tmp_path, world, "vqa", lambda: [1], 60)


def test_ranks_and_devices_bad_values(
    tiny_checkpoint: Path, data_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert rank_device("cuda", World(1, 2, 1, 2), 2) == "cuda:1"
    assert rank_device("auto", World(1, 2, 1, 2), 0) == "auto"
    assert rank_device("cuda:1", World(0, 1), 2) == "cuda:1"
    with pytest.raises(YivlError) as err:
        rank_device("cuda:1", World(0, 2), 2)
    assert (
        str(err.value) == "device=cuda:1 with 2 processes: give device=cuda (rank i uses cuda:<local rank i>)"
    )
    with pytest.raises(YivlError) as err:
        rank_device("cuda", World(1, 2, 1, 2), 1)
    assert str(err.value) == (
        "rank 1 is local rank 1 but this machine has 1 CUDA device(s); start at most 1 processes per machine"
    )
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("RANK", "2")
    with pytest.raises(YivlError, match=r"^RANK=2 must be in 0\.\.1 \(WORLD_SIZE=2\)$"):
        world_from_env()
    monkeypatch.setenv("RANK", "0")
    cfg = eval_config(tiny_checkpoint, tmp_path / "x", tasks_of(data_dir), "devices=2")
    with pytest.raises(YivlError) as err:
        run(cfg)
    assert str(err.value) == "devices=2 under a launcher (WORLD_SIZE=2); use one or the other"
    with pytest.raises(YivlError, match=r"^devices=0 must be an integer >= 1$"):
        run(eval_config(tiny_checkpoint, tmp_path / "x", tasks_of(data_dir), "devices=0"))
