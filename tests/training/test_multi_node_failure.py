"""A node dies mid-run under torchrun: the other node stops, and ``ckpt_path=last`` on both finishes the
run with the weights of an uninterrupted one."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest
import torch

from tests.training.test_multi_node import NODE, clean_env, exported, free_port, run_all
from tests.training.test_sweeps import ROOT, small_run

STEPS = ["trainer.max_steps=12", "callbacks.model_checkpoint.every_n_train_steps=4"]
RUN = ["global_batch_size=4", "strategy=ddp", "val_generation=none", "trainer.log_every_n_steps=1"]


def torchrun(run_id: str, port: int, args: list[str]) -> list[str]:
    return [
        *(sys.executable, "-m", "torch.distributed.run", "--nnodes", "2", "--nproc-per-node", "1"),
        *("--rdzv-backend", "c10d", "--rdzv-endpoint", f"127.0.0.1:{port}", "--rdzv-id", run_id),
        *("--max-restarts", "0", "train.py", *args),
    ]


def kill_node(launcher: subprocess.Popen) -> None:
    """SIGKILL a node: its torchrun agent and the workers it started (each in a session of its own)."""
    workers = psutil.Process(launcher.pid).children(recursive=True)
    for proc in [*workers, launcher]:
        os.kill(proc.pid, signal.SIGKILL)
    launcher.wait(timeout=30)


def wait_for(path: Path, procs: list[subprocess.Popen], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not path.exists():
        assert time.monotonic() < deadline, f"no {path.name} after {timeout} s"
        assert all(p.poll() is None for p in procs), "a node exited before its first checkpoint"
        time.sleep(0.2)


@pytest.mark.slow
def test_a_node_failure_stops_the_run_and_resuming_finishes_it(
    tiny_checkpoint: Path, data_dir: Path, tmp_path: Path
) -> None:
    base = [*small_run(tiny_checkpoint, data_dir), *RUN, *NODE, *STEPS]
    straight = tmp_path / "straight"
    command = torchrun("straight", free_port(), [*base, f"hydra.run.dir={straight}"])
    run_all([(command, clean_env()), (command, clean_env())], tmp_path / "logs_straight")

    run_dir = tmp_path / "failed"
    command = torchrun("failed", free_port(), [*base, f"hydra.run.dir={run_dir}"])
    logs = [open(tmp_path / f"failed_{i}.log", "w", encoding="utf-8") for i in range(2)]  # noqa: SIM115
    nodes = [
        subprocess.Popen(command, cwd=ROOT, env=clean_env(), stdout=f, stderr=subprocess.STDOUT) for f in logs
    ]
    try:
        # last.ckpt comes just after step0000004.ckpt; a node that dies in between leaves only the step file
        wait_for(run_dir / "checkpoints" / "last.ckpt", nodes, timeout=600)
        time.sleep(0.5)
        kill_node(nodes[1])
        start = time.monotonic()
        assert nodes[0].wait(timeout=300) != 0  # gloo: the survivor's next all-reduce fails at once
        assert time.monotonic() - start < 120
    finally:
        for node in nodes:
            if node.poll() is None:
                kill_node(node)
        for f in logs:
            f.close()
    assert not (run_dir / "export").exists()

    command = torchrun("resumed", free_port(), [*base, f"hydra.run.dir={run_dir}", "ckpt_path=last"])
    run_all([(command, clean_env()), (command, clean_env())], tmp_path / "logs_resumed")
    ours, theirs = exported(run_dir), exported(straight)
    assert ours.keys() == theirs.keys()
    for key, value in theirs.items():
        torch.testing.assert_close(ours[key], value, rtol=0, atol=1e-6, msg=key)
