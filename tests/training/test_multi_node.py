"""Multi-node launch: two torchrun launchers, or two SLURM-style tasks, equal one node with 2 processes.

Each "node" is a process on 127.0.0.1 with one CPU rank (gloo); the reference is ``trainer=ddp_sim``
(one launcher, Lightning starts rank 1). Same global batch, same data, fp32: the losses and the
exported weights agree to float rounding (measured: losses identical, weights within 8e-8).
"""

from __future__ import annotations

import csv
import os
import signal
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from tests.training.test_sweeps import ROOT, small_run
from yivl.errors import YivlError
from yivl.training.launch import check_external_launch, external_launcher

WEIGHT_ATOL = 1e-6
RUN = [
    "trainer.max_steps=3",
    "trainer.log_every_n_steps=1",
    "global_batch_size=4",
    "strategy=ddp",
    "val_generation=none",
]
NODE = ["trainer=multi_node", "trainer.accelerator=cpu", "trainer.devices=1", "trainer.precision=32-true"]
SLURM = {
    "SLURM_JOB_ID": "4242",
    "SLURM_JOB_NAME": "yivl-test",
    "SLURM_NTASKS": "2",
    "SLURM_NPROCS": "2",
    "SLURM_NNODES": "2",
    "SLURM_JOB_NUM_NODES": "2",
    "SLURM_NTASKS_PER_NODE": "1",
    "SLURM_TASKS_PER_NODE": "1(x2)",
    "SLURM_JOB_NODELIST": "node[001-002]",
    "SLURM_NODELIST": "node[001-002]",
    "SLURM_STEP_ID": "0",
    "SLURM_LOCALID": "0",
}


def clean_env() -> dict[str, str]:
    """This process's environment without any launcher's variables (CI may itself run under SLURM)."""
    launcher = ("SLURM_", "TORCHELASTIC_", "PET_", "GROUP_")
    ranks = ("RANK", "LOCAL_RANK", "WORLD_SIZE", "NODE_RANK", "MASTER_ADDR", "MASTER_PORT")
    env = {k: v for k, v in os.environ.items() if not k.startswith(launcher) and k not in ranks}
    return {**env, "PYTHONPATH": str(ROOT)}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def run_all(commands: list[tuple[list[str], dict[str, str]]], logs: Path, timeout: int = 600) -> list[str]:
    """Start every command at once (output to files: a full pipe would stall its rank); wait for all,
    bounded; their output. A group still running at the timeout is killed."""
    logs.mkdir(parents=True, exist_ok=True)
    files = [open(logs / f"{i}.log", "w+", encoding="utf-8") for i in range(len(commands))]  # noqa: SIM115
    procs = [
        subprocess.Popen(
            cmd, cwd=ROOT, env=env, stdout=f, stderr=subprocess.STDOUT, text=True, start_new_session=True
        )
        for (cmd, env), f in zip(commands, files, strict=True)
    ]
    try:
        for proc in procs:
            proc.wait(timeout=timeout)
    finally:
        for proc in procs:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(timeout=30)
    outputs = []
    for f in files:
        f.seek(0)
        outputs.append(f.read())
        f.close()
    for proc, out in zip(procs, outputs, strict=True):
        assert proc.returncode == 0, out[-3000:]
    return outputs


def losses(run_dir: Path) -> list[float]:
    with open(run_dir / "csv" / "metrics.csv", encoding="utf-8") as f:
        return [float(r["train/loss"]) for r in csv.DictReader(f) if r.get("train/loss")]


def exported(run_dir: Path) -> dict[str, torch.Tensor]:
    return load_file(run_dir / "export" / "model.safetensors")


@pytest.fixture(scope="module")
def one_node(tiny_checkpoint: Path, data_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The reference: one launcher, 2 processes (trainer=ddp_sim)."""
    run_dir = tmp_path_factory.mktemp("one_node") / "run"
    args = [*small_run(tiny_checkpoint, data_dir), *RUN, "trainer=ddp_sim", f"hydra.run.dir={run_dir}"]
    run_all([([sys.executable, "train.py", *args], clean_env())], run_dir.parent / "logs")
    return run_dir


def assert_same_run(run_dir: Path, reference: Path) -> None:
    assert len(losses(reference)) == 3
    assert losses(run_dir) == pytest.approx(losses(reference), abs=1e-6)
    ours, theirs = exported(run_dir), exported(reference)
    assert ours.keys() == theirs.keys()
    for key, value in theirs.items():
        torch.testing.assert_close(ours[key], value, rtol=0, atol=WEIGHT_ATOL, msg=key)


@pytest.mark.slow
def test_two_torchrun_launchers_train_like_one_node(
    one_node: Path, tiny_checkpoint: Path, data_dir: Path, tmp_path: Path
) -> None:
    run_dir = tmp_path / "torchrun"
    torchrun = [sys.executable, "-m", "torch.distributed.run", "--nnodes", "2", "--nproc-per-node", "1"]
    torchrun += ["--rdzv-backend", "c10d", "--rdzv-endpoint", f"127.0.0.1:{free_port()}"]
    torchrun += ["--rdzv-id", "yivl-test", "--max-restarts", "0"]
    args = [*small_run(tiny_checkpoint, data_dir), *RUN, *NODE, f"hydra.run.dir={run_dir}"]
    command = [*torchrun, "train.py", *args]
    run_all([(command, clean_env()), (command, clean_env())], tmp_path / "logs")
    assert_same_run(run_dir, one_node)


@pytest.mark.slow
def test_two_slurm_tasks_train_like_one_node(
    one_node: Path, tiny_checkpoint: Path, data_dir: Path, tmp_path: Path
) -> None:
    """What ``srun`` sets for ``--nodes=2 --ntasks-per-node=1``; MASTER_ADDR/PORT as the sbatch script
    in docs/training.md exports them (the node names do not resolve here)."""
    run_dir = tmp_path / "slurm"
    args = [*small_run(tiny_checkpoint, data_dir), *RUN, *NODE, f"hydra.run.dir={run_dir}"]
    rendezvous = {"MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(free_port())}
    tasks = [
        {**clean_env(), **SLURM, **rendezvous, "SLURM_PROCID": str(rank), "SLURM_NODEID": str(rank)}
        for rank in (0, 1)
    ]
    outputs = run_all([([sys.executable, "train.py", *args], env) for env in tasks], tmp_path / "logs")
    assert "GLOBAL_RANK: 1, MEMBER: 2/2" in outputs[1]
    assert_same_run(run_dir, one_node)


def test_external_launch_without_a_run_folder_is_refused_before_loading(tmp_path: Path) -> None:
    env = {**clean_env(), **SLURM, "SLURM_PROCID": "0", "SLURM_NODEID": "0"}
    args = [f"model.path={tmp_path / 'absent'}", "model.build_if_missing=false", *NODE]
    result = subprocess.run(
        [sys.executable, "train.py", *args], cwd=ROOT, env=env, capture_output=True, text=True, timeout=300
    )
    assert result.returncode == 2
    assert result.stderr.strip().splitlines()[-1] == (
        "error: SLURM started 2 processes, and each would pick its own timestamped run folder; "
        "add hydra.run.dir=DIR (the same on every node, on a shared file system)"
    )


@pytest.fixture
def no_launcher(monkeypatch: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    for key in list(os.environ):
        if key.startswith(("SLURM_", "TORCHELASTIC_")) or key == "WORLD_SIZE":
            monkeypatch.delenv(key)
    return monkeypatch


def trainer(devices: int | str, num_nodes: int) -> dict:
    return {"devices": devices, "num_nodes": num_nodes}


def test_no_launcher_is_not_checked(no_launcher: pytest.MonkeyPatch) -> None:
    assert external_launcher() is None
    check_external_launch(trainer(8, 2), run_dir_given=False)


def test_torchrun_world_must_match_devices_and_nodes(no_launcher: pytest.MonkeyPatch) -> None:
    no_launcher.setenv("TORCHELASTIC_RUN_ID", "x")
    no_launcher.setenv("WORLD_SIZE", "4")
    assert external_launcher() == "torchrun"
    check_external_launch(trainer(2, 2), run_dir_given=True)
    check_external_launch(trainer(-1, 2), run_dir_given=True)  # Lightning counts the GPUs
    with pytest.raises(YivlError) as err:
        check_external_launch(trainer(8, 2), run_dir_given=True)
    assert str(err.value) == (
        "torchrun started 4 process(es) but trainer.devices=8 x trainer.num_nodes=2 = 16; set "
        "trainer.devices to --nproc-per-node and trainer.num_nodes to --nnodes"
    )
    with pytest.raises(YivlError, match=r"^torchrun started 4 processes, and each would pick"):
        check_external_launch(trainer(2, 2), run_dir_given=False)


def test_slurm_layout_must_match_the_trainer(no_launcher: pytest.MonkeyPatch) -> None:
    for key, value in SLURM.items():
        no_launcher.setenv(key, value)
    assert external_launcher() == "SLURM"
    check_external_launch(trainer(1, 2), run_dir_given=True)
    with pytest.raises(YivlError) as err:
        check_external_launch(trainer(8, 2), run_dir_given=True)
    assert str(err.value) == (
        "SLURM runs 1 task(s) per node (--ntasks-per-node) but trainer.devices=8; set trainer.devices=1, "
        "or --ntasks-per-node=8 and start train.py with srun"
    )
    with pytest.raises(YivlError) as err:
        check_external_launch(trainer(1, 4), run_dir_given=True)
    assert str(err.value) == (
        "SLURM gave the job 2 node(s) (--nodes) but trainer.num_nodes=4; set trainer.num_nodes=2"
    )
    no_launcher.delenv("SLURM_NTASKS_PER_NODE")
    with pytest.raises(YivlError, match=r"^SLURM started 2 tasks without --ntasks-per-node; Lightning"):
        check_external_launch(trainer(1, 2), run_dir_given=True)
    no_launcher.setenv("SLURM_JOB_NAME", "interactive")  # salloc shells: Lightning ignores SLURM
    assert external_launcher() is None
