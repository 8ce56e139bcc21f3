"""bench/gpu_suite.sh cannot rot: its --smoke mode runs every row on the tiny model on the CPU, and a
row that fails, hangs or runs out of time prints its status instead of taking the suite down."""

from __future__ import annotations

import importlib.util
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
ROWS = [
    "matmul rate",
    "random checkpoint",
    "generation, batch 1",
    "generation, batch 8",
    "stage 3, FSDP2",
    "stage 3, FSDP2, packed",
    "stage 3, ZeRO-3",
    "LoRA",
    "QLoRA",
]
NUMBER = r"[\d,]+(\.\d+)?"


def load_suite():
    spec = importlib.util.spec_from_file_location("gpu_suite", ROOT / "bench" / "gpu_suite.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules["gpu_suite"] = module
    spec.loader.exec_module(module)
    return module


suite = load_suite()


def settings(tmp_path: Path, budget_s: float = 60) -> object:
    return suite.Settings(
        smoke=True, slowdown=1.0, work=tmp_path, deadline=time.monotonic() + budget_s,
        batch_size=2, steps=3, warmup=1, new_tokens=4,
    )  # fmt: skip


def test_a_failed_row_reports_one_line() -> None:
    oom = "Traceback (most recent call last):\ntorch.OutOfMemoryError: CUDA out of memory. Tried to allocate"
    assert suite.failure(1, oom) == "does not fit one GPU (CUDA out of memory)"
    user = "[INFO] loading\nerror: strategy=fsdp runs only on CUDA GPUs; use trainer=gpu\n"
    assert (
        suite.failure(2, user)
        == "failed (exit 2): error: strategy=fsdp runs only on CUDA GPUs; use trainer=gpu"
    )
    crash = "Traceback:\n  File x\nRuntimeError: gloo died\n\nSet the environment variable HYDRA_FULL_ERROR=1"
    assert suite.failure(1, crash) == "failed (exit 1): RuntimeError: gloo died"


def test_a_hanging_row_is_stopped_at_its_limit(tmp_path: Path) -> None:
    row = suite.Row("hangs")
    start = time.monotonic()
    out = suite.run_row(row, [sys.executable, "-c", "import time; time.sleep(60)"], 2, settings(tmp_path))
    assert out == "" and row.status == "timeout after 2 s"
    assert time.monotonic() - start < 30
    late = suite.Row("late")
    assert suite.run_row(late, [sys.executable, "-c", "print(1)"], 60, settings(tmp_path, budget_s=1)) == ""
    assert late.status == "skipped: the suite's time budget was spent"


@pytest.mark.slow
def test_smoke_mode_prints_the_whole_table(tmp_path: Path) -> None:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    result = subprocess.run(
        ["bash", "bench/gpu_suite.sh", "--smoke", "--workdir", str(tmp_path)],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=1800,
    )  # fmt: skip
    table = [line for line in result.stdout.splitlines() if line.startswith("| ")]
    assert table[0] == (
        "| row | status | step (s) | supervised tok/s | MFU | peak memory (GiB) | generated tok/s |"
    ), result.stdout + result.stderr[-3000:]
    rows = {
        cells[0]: cells[1:]
        for cells in ([c.strip() for c in line.strip("|").split("|")] for line in table[1:])
    }
    assert list(rows) == ROWS
    assert re.fullmatch(r"ok \([\d.e+-]+ TFLOP/s\)", rows["matmul rate"][0])
    assert rows["random checkpoint"][0] == "ok (0.7 M params)"
    status, step, tokens, mfu, peak, gen = rows["LoRA"]
    assert status == "ok" and float(step) > 0 and float(tokens.replace(",", "")) > 0
    assert re.fullmatch(rf"{NUMBER}%", mfu) and peak == "0.0" and gen == ""
    for name in ("generation, batch 1", "generation, batch 8"):
        assert rows[name][0] == "ok" and float(rows[name][5].replace(",", "")) > 0
    # whatever the CPU allows, one line each
    for name in ("stage 3, FSDP2", "stage 3, FSDP2, packed", "stage 3, ZeRO-3", "QLoRA"):
        assert re.fullmatch(r"ok|failed \(exit \d+\): \S.*|skipped: \S.*", rows[name][0]), rows[name]
    assert result.returncode == (
        0 if all(r[0] == "ok" or r[0].startswith(("ok (", "skipped")) for r in rows.values()) else 1
    )
