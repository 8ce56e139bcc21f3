"""2-process DDP (trainer=ddp_sim, gloo) on a mix665k-shaped file with text-only records: the same
gradients as one process accumulating the same global batches, and no "parameters not used" crash when
a rank's batch has no image (find_unused_parameters stays false)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from tests.data.public_formats import mix665k_records, write_public

ROOT = Path(__file__).resolve().parents[2]
TIMEOUT = 600  # each run; a hung rendezvous fails the test
STEPS = 6
GRAD_TOL = 1e-6


def train_py(tiny: Path, data: Path, run: Path, *extra: str) -> dict:
    args = [
        sys.executable,
        "train.py",
        f"model.path={tiny}",
        "model.build_if_missing=false",
        "data=json",
        f"data.train.0.path={data / 'mix.json'}",
        f"data.train.0.image_folder={data / 'images'}",
        f"hydra.run.dir={run}",
        "data.batch_size=1",
        "global_batch_size=2",
        "data.group_by_length=false",  # the same global batches for 1 and 2 processes
        "data.num_workers=0",
        "data.pin_memory=false",
        "trainer.accelerator=cpu",
        "trainer.precision=32-true",
        f"trainer.max_steps={STEPS}",
        "trainer.limit_val_batches=0",
        "val_generation=none",
        "export.enabled=false",
        "extras.print_config=false",
        "+callbacks.grads._target_=tests.training.grad_probe.GradProbe",
        f"+callbacks.grads.dir={run / 'grads'}",
        f"+callbacks.grads.steps={STEPS}",
        *extra,
    ]
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    result = subprocess.run(args, cwd=ROOT, env=env, capture_output=True, text=True, timeout=TIMEOUT)
    assert result.returncode == 0, result.stderr[-3000:]
    return {p.stem: torch.load(p, weights_only=True) for p in sorted((run / "grads").glob("rank*.pt"))}


@pytest.mark.slow
def test_ddp_gives_the_one_process_gradient_and_survives_text_only_batches(
    tiny_checkpoint: Path, tmp_path: Path
) -> None:
    write_public(tmp_path / "data", "mix.json", mix665k_records())
    one = train_py(tiny_checkpoint, tmp_path / "data", tmp_path / "one")
    two = train_py(tiny_checkpoint, tmp_path / "data", tmp_path / "two", "trainer=ddp_sim", "strategy=ddp")
    assert sorted(two) == ["rank0", "rank1"]
    for step in range(STEPS):  # the same samples in each global batch
        want = sorted(b["input_ids"].tolist() for b in one["rank0"]["batches"][step])
        got = sorted(b["input_ids"].tolist() for r in two.values() for b in r["batches"][step])
        assert want == got
    text_only = [
        step
        for step in range(STEPS - 1)  # DDP would fail at the step after one with unused parameters
        for r in two.values()
        if r["batches"][step][0]["pixel_values"].shape[0] == 0
    ]
    assert text_only, "no rank drew a text-only batch before the last step"
    want, got = one["rank0"]["grads"][0], two["rank0"]["grads"][0]
    assert sorted(want) == sorted(got) and any(k.startswith("model.mm_projector.") for k in got)
    assert max(float((want[k] - got[k]).abs().max()) for k in want) < GRAD_TOL
    assert all(torch.equal(two["rank0"]["grads"][0][k], two["rank1"]["grads"][0][k]) for k in got)
