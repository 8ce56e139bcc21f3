"""Sweeps through the real command line: a two-job multirun, an Optuna study, multi-process jobs."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from tests.training.conftest import SMALL_DATA

ROOT = Path(__file__).resolve().parents[2]


def small_run(tiny_checkpoint: Path, data_dir: Path) -> list[str]:
    """Overrides for a 2-step run of the tiny model on the small synthetic set."""
    return [
        f"model.path={tiny_checkpoint}",
        "model.build_if_missing=false",
        f"paths.data_dir={data_dir}",
        "data.batch_size=2",
        "global_batch_size=2",
        "trainer.accelerator=cpu",
        "trainer.max_steps=2",
        "trainer.limit_val_batches=1",
        "trainer.val_check_interval=2",
        "extras.print_config=false",
        *SMALL_DATA,
    ]


def train_py(*args: str, timeout: int = 600) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    result = subprocess.run(
        [sys.executable, "train.py", *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return result


def job_dirs(sweep: Path) -> list[Path]:
    return sorted(p for p in sweep.iterdir() if p.is_dir())


def test_multirun_gives_each_job_its_own_folder(
    tiny_checkpoint: Path, data_dir: Path, tmp_path: Path
) -> None:
    sweep = tmp_path / "sweep"
    train_py(
        "-m",
        "module.optimizer.lr=1e-3,2e-3",
        f"hydra.sweep.dir={sweep}",
        *small_run(tiny_checkpoint, data_dir),
    )
    jobs = job_dirs(sweep)
    assert [p.name for p in jobs] == ["0", "1"]
    for job, lr in zip(jobs, ("0.001", "0.002"), strict=True):
        assert (job / "export" / "config.json").is_file() and (job / "csv" / "metrics.csv").is_file()
        assert f"module.optimizer.lr={lr}" in (job / ".hydra" / "overrides.yaml").read_text()


@pytest.mark.slow
def test_optuna_runs_two_trials_and_reports_the_best(
    tiny_checkpoint: Path, data_dir: Path, tmp_path: Path
) -> None:
    sweep = tmp_path / "optuna"
    result = train_py(
        "hparams_search=optuna", f"hydra.sweep.dir={sweep}", *small_run(tiny_checkpoint, data_dir)
    )
    assert [p.name for p in job_dirs(sweep)] == ["0", "1"]
    best = yaml.safe_load((sweep / "optimization_results.yaml").read_text())
    assert "module.optimizer.lr" in best["best_params"] and best["best_value"] > 0
    assert "Best value" in result.stdout + result.stderr


@pytest.mark.slow
def test_multirun_with_two_processes_per_job_neither_duplicates_nor_hangs(
    tiny_checkpoint: Path, data_dir: Path, tmp_path: Path
) -> None:
    sweep = tmp_path / "ddp"
    args = [*small_run(tiny_checkpoint, data_dir), "trainer=ddp_sim", "strategy=ddp", "global_batch_size=4"]
    train_py("-m", "module.optimizer.lr=1e-3,2e-3", f"hydra.sweep.dir={sweep}", *args, timeout=900)
    jobs = job_dirs(sweep)
    assert [p.name for p in jobs] == ["0", "1"]  # no extra timestamped folders from rank 1
    for job in jobs:
        assert (job / "export" / "config.json").is_file()
    assert not list((ROOT / "logs").glob("**/train_ddp_process_1*")) if (ROOT / "logs").exists() else True
