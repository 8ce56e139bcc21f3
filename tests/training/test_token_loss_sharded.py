"""DeepSpeed's accumulation under the token-weighted loss: 2 processes accumulating 2 micro-batches
each (ZeRO-2) take the one-process step of 4 accumulated micro-batches.

Lightning divides each micro-batch loss by the accumulation count and DeepSpeed's engine divides it
once more; yivl.training.token_loss multiplies the extra factor back. Adam would hide a wrong constant
factor, so the step here is made gradient-proportional (betas 0, an eps far above every gradient,
no clipping, no warmup): the update is lr / eps x the gradient, and a factor of 2 would show as twice
the step."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from tests.training.test_deepspeed_train import exported, max_diff, run_args, train_py

# measured (docs/training.md, "Token-weighted loss"): 7.5e-9 on updates of up to 8.7e-2
WEIGHT_TOL = 1e-6
LINEAR_STEP = (
    "module.optimizer.lr=100",
    "module.optimizer.eps=1000",  # update = lr * g / (|g| + eps), about 0.1 * g
    "module.optimizer.betas=[0.0,0.0]",
    "module.scheduler.warmup_ratio=0",
    "trainer.gradient_clip_val=0",
    "data.batch_size=1",  # global batch 4: 1 process 4 micro-batches, 2 processes 2 each
    "trainer.max_steps=1",
)


def exported_start(tiny: Path) -> dict[str, torch.Tensor]:
    """The tiny checkpoint's tensors, named as :func:`exported` names a run's export."""
    tensors = {k: v for f in sorted(tiny.glob("model-*.safetensors")) for k, v in load_file(f).items()}
    (vit,) = (tiny / "vit").glob("*/model.safetensors")
    return {**tensors, **{f"vit.{k}": v for k, v in load_file(vit).items()}}


@pytest.mark.slow
def test_zero2_accumulating_two_ranks_takes_the_one_process_step(
    tiny_checkpoint: Path, data_dir: Path, tmp_path: Path, monkeypatch
) -> None:
    monkeypatch.setenv("DS_ACCELERATOR", "cpu")
    one, two = tmp_path / "one", tmp_path / "two"
    train_py(run_args(tiny_checkpoint, data_dir, one, "trainer=cpu", *LINEAR_STEP))  # generates the data
    ds = ("trainer=ddp_sim", "strategy=deepspeed_zero2")
    train_py(run_args(tiny_checkpoint, data_dir, two, *ds, *LINEAR_STEP))
    start = exported_start(tiny_checkpoint)
    want, got = exported(one), exported(two)
    assert max_diff(want, start) > 1e-2  # the step is large enough to see a wrong factor
    assert max_diff(want, got) < WEIGHT_TOL
