"""last.ckpt at each epoch end and on Ctrl-C (exit 130 with the resume command); plain progress lines."""

from __future__ import annotations

import csv
import os
import re
import shlex
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from tests.training.conftest import SMALL_DATA, make_train_cfg
from yivl.training.callbacks import progress_line
from yivl.training.interrupt import resume_command
from yivl.training.run import train

ROOT = Path(__file__).resolve().parents[2]
# 2 epochs of 24 optimizer steps (enough that Ctrl-C lands mid-run); periodic checkpoints out of the way,
# so only epoch ends write last.ckpt
RUN = [
    "trainer.max_epochs=2",
    "trainer.limit_train_batches=24",
    "trainer.limit_val_batches=0",
    "trainer.log_every_n_steps=1",
    "callbacks.model_checkpoint.every_n_train_steps=1000",
    "export.enabled=false",
]
PROGRESS = re.compile(r"^epoch [12]/2 step (\d+)/48 loss \d+\.\d{4} lr \d\.\d\de-\d\d( tok/s [\d,]+)? eta ")


def logged_steps(run_dir: Path) -> list[int]:
    with open(run_dir / "csv" / "metrics.csv", encoding="utf-8") as f:
        return sorted(int(r["step"]) for r in csv.DictReader(f) if r.get("train/loss"))


def saved_weights(ckpt: Path) -> dict[str, torch.Tensor]:
    return torch.load(ckpt, map_location="cpu", weights_only=True)["state_dict"]


@pytest.fixture(scope="module")
def straight(tiny_checkpoint: Path, data_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> dict:
    """The 48 steps in one go: the weights its final last.ckpt holds."""
    out = tmp_path_factory.mktemp("straight")
    result = train(make_train_cfg(tiny_checkpoint, data_dir, out, tuple(RUN)))
    assert result.trainer.global_step == 48
    return saved_weights(out / "checkpoints" / "last.ckpt")


def assert_same_weights(got: dict[str, torch.Tensor], want: dict[str, torch.Tensor]) -> None:
    assert set(got) == set(want)
    for name, tensor in got.items():
        torch.testing.assert_close(tensor, want[name], atol=0, rtol=0, msg=name)


def test_last_ckpt_of_a_finished_epoch_resumes_at_the_next(train_cfg, tmp_path: Path) -> None:
    """(The weights differ from the straight run's: a 1-epoch run schedules its lr over 24 steps, not 48;
    the Ctrl-C test below checks exactness.)"""
    first = train(train_cfg(*RUN, "trainer.max_epochs=1", out=tmp_path / "a"))
    last = tmp_path / "a" / "checkpoints" / "last.ckpt"
    assert sorted(p.name for p in last.parent.iterdir()) == ["last.ckpt"]
    saved = torch.load(last, map_location="cpu", weights_only=True)
    assert (saved["epoch"], saved["global_step"], first.trainer.global_step) == (1, 24, 24)  # epochs done
    assert saved["YiVLDataModule"]["batches_done"] == 0  # of epoch 1, the next one
    resumed = train(train_cfg(*RUN, f"ckpt_path={last}", out=tmp_path / "b"))
    assert resumed.trainer.global_step == 48 and resumed.trainer.current_epoch == 2
    assert logged_steps(tmp_path / "b") == list(range(24, 48))  # only the second epoch ran
    assert torch.load(tmp_path / "b" / "checkpoints" / "last.ckpt", weights_only=True)["epoch"] == 2


def wait_for(predicate, seconds: float) -> None:
    deadline = time.monotonic() + seconds
    while not predicate():
        assert time.monotonic() < deadline, f"gave up after {seconds} s"
        time.sleep(0.05)


def test_ctrl_c_saves_last_ckpt_exits_130_and_the_printed_command_resumes(
    straight: dict, tiny_checkpoint: Path, data_dir: Path, tmp_path: Path
) -> None:
    overrides = [
        f"model.path={tiny_checkpoint}",
        "model.build_if_missing=false",
        f"paths.data_dir={data_dir}",
        "data=synthetic",
        "data.batch_size=2",
        "global_batch_size=2",
        "trainer.accelerator=cpu",
        "trainer.precision=32-true",
        "extras.print_config=false",
        *SMALL_DATA,
        *RUN,
        "callbacks.progress_bar.log_every_s=0",  # a line per step: stdout is a file here, not a terminal
    ]
    run_dir = tmp_path / "run"
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    stdout, stderr = tmp_path / "stdout.txt", tmp_path / "stderr.txt"
    with open(stdout, "w") as out, open(stderr, "w") as err:
        args = [sys.executable, "train.py", *overrides, f"hydra.run.dir={run_dir}"]
        proc = subprocess.Popen(args, cwd=ROOT, env=env, stdout=out, stderr=err)
        try:
            wait_for(lambda: "step 1/48" in stdout.read_text() or proc.poll() is not None, 120)
            proc.send_signal(signal.SIGINT)
            code = proc.wait(timeout=120)
        finally:
            proc.kill()
    assert code == 130, stderr.read_text()[-2000:]
    message = stderr.read_text().strip().splitlines()[-1]
    step = int(re.match(r"interrupted at step (\d+); ", message).group(1))
    assert 1 <= step < 48
    command = shlex.join(["python", "train.py", *overrides, f"hydra.run.dir={run_dir}", "ckpt_path=last"])
    assert message == f"interrupted at step {step}; resume with: {command}"
    assert torch.load(run_dir / "checkpoints" / "last.ckpt", weights_only=True)["global_step"] == step

    resumed = subprocess.run(
        [sys.executable, *shlex.split(command)[1:]],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    lines = [m for m in map(PROGRESS.match, resumed.stdout.splitlines()) if m]
    assert [int(m.group(1)) for m in lines] == list(range(step + 1, 49))
    assert_same_weights(saved_weights(run_dir / "checkpoints" / "last.ckpt"), straight)


def test_resume_command_drops_the_old_resume_and_quotes_odd_paths() -> None:
    overrides = ["model=tiny", "ckpt_path=/x/step1.ckpt", "hydra.run.dir=old", "data.train.0.path=a b.json"]
    assert resume_command(overrides, "/runs/it's here", multirun=True) == (
        "python train.py model=tiny 'data.train.0.path=a b.json' "
        "'hydra.run.dir='\"'\"'/runs/it\\'\"'\"'s here'\"'\"'' hydra.mode=RUN ckpt_path=last"
    )
    assert (
        resume_command([], "/runs/1", multirun=False)
        == "python train.py hydra.run.dir=/runs/1 ckpt_path=last"
    )


def test_progress_line_leaves_out_what_is_unknown() -> None:
    metrics = {"train/loss": torch.tensor(2.34567), "lr": 4.9e-4, "tok/s": 1234.4}
    assert (
        progress_line((1, 8), (120, 2000), metrics, 465.2)
        == "epoch 1/8 step 120/2000 loss 2.3457 lr 4.90e-04 tok/s 1,234 eta 0:07:45"
    )
    assert progress_line((3, -1), (7, float("inf")), {}, None) == "epoch 3 step 7"
