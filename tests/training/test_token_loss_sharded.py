"""The token-weighted loss under sharded strategies: 2 processes accumulating 2 micro-batches each
take the one-process step of 4 accumulated micro-batches, also when micro-batches are text-only.

Lightning divides each micro-batch loss by the accumulation count and DeepSpeed's engine divides it
once more; yivl.training.token_loss multiplies the extra factor back. Adam would hide a wrong constant
factor, so the step here is made gradient-proportional (betas 0, an eps far above every gradient,
no clipping, no warmup): the update is lr / eps x the gradient, and a factor of 2 would show as twice
the step. On a mix665k-shaped file (text-only records among answers of 1 to 39 supervised tokens)
a text-only rank must still send ZeRO the tower's gradients in an image batch's order."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from tests.data.public_formats import mix665k_records, write_public
from tests.training.test_deepspeed_train import exported, max_diff, run_args, train_py

# measured (docs/training.md, "Token-weighted loss"): at most 6e-8 on updates of up to 8.7e-2
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


def mix_args(tiny: Path, data: Path, out: Path, *extra: str) -> list[str]:
    return [
        f"model.path={tiny}",
        "model.build_if_missing=false",
        "data=json",
        f"data.train.0.path={data / 'mix.json'}",
        f"data.train.0.image_folder={data / 'images'}",
        f"hydra.run.dir={out}",
        "global_batch_size=4",
        "data.group_by_length=false",  # the same global batches for 1 and 2 processes
        "data.num_workers=0",
        "trainer.accelerator=cpu",
        "trainer.precision=32-true",
        "trainer.limit_val_batches=0",
        "val_generation=none",
        "extras.print_config=false",
        *LINEAR_STEP,
        *extra,
    ]


@pytest.fixture(scope="module")
def mix_runs(tiny_checkpoint: Path, tmp_path_factory: pytest.TempPathFactory):
    """``mix_runs(name, *overrides)``: the export of one step on the mix file, run once per module."""
    data = tmp_path_factory.mktemp("mix")
    write_public(data, "mix.json", mix665k_records())
    done: dict[str, dict[str, torch.Tensor]] = {}

    def get(name: str, *extra: str) -> dict[str, torch.Tensor]:
        if name not in done:
            out = tmp_path_factory.mktemp(name)
            train_py(mix_args(tiny_checkpoint, data, out, *extra))
            done[name] = exported(out)
        return done[name]

    return get


@pytest.mark.slow
@pytest.mark.parametrize("strategy", ["deepspeed_zero2", "deepspeed_zero3", "fsdp"])
def test_text_only_micro_batches_take_the_one_process_step(
    mix_runs, tiny_checkpoint: Path, monkeypatch, strategy: str
) -> None:
    """The first step's micro-batches (in this order, group_by_length off) put a text-only one on
    rank 1. Without the blank-image pass ZeRO-2 aborted (gloo size mismatch) and a zero-weighted
    parameter sum instead gave weights 1.3e-2 off on updates of 3.1e-2; ZeRO-3 and FSDP2 aborted."""
    monkeypatch.setenv("DS_ACCELERATOR", "cpu")
    want = mix_runs("one", "trainer=cpu")
    got = mix_runs(strategy, "trainer=ddp_sim", f"strategy={strategy}")
    assert max_diff(want, exported_start(tiny_checkpoint)) > 1e-2
    assert max_diff(want, got) < WEIGHT_TOL


# 48 synthetic samples pack into 24 rows of 384 tokens (two a row): the step's global batch is 4 rows,
# dealt from one plan (1 process: 4 micro-batches of a row; 2 processes: 2 each)
PACKED = ("data.packing=true", "data.pack_length=384")


@pytest.fixture(scope="module")
def packed_runs(tiny_checkpoint: Path, data_dir: Path, tmp_path_factory: pytest.TempPathFactory):
    """``packed_runs(name, *overrides)``: the folder of one packed step, run once per module; DDP and one
    process also keep their batches and gradients (tests.training.grad_probe; FSDP2's are shards)."""
    done: dict[str, Path] = {}

    def get(name: str, *extra: str) -> Path:
        if name not in done:
            out = tmp_path_factory.mktemp(name)
            probe = [] if name == "fsdp" else [f"+callbacks.grads.dir={out / 'grads'}"]
            if probe:
                probe.append("+callbacks.grads._target_=tests.training.grad_probe.GradProbe")
            train_py(run_args(tiny_checkpoint, data_dir, out, *LINEAR_STEP, *PACKED, *probe, *extra))
            done[name] = out
        return done[name]

    return get


def probed(out: Path) -> dict[str, dict]:
    return {p.stem: torch.load(p, weights_only=True) for p in sorted((out / "grads").glob("rank*.pt"))}


@pytest.mark.slow
@pytest.mark.parametrize("strategy", ["ddp", "fsdp"])
def test_packed_rows_two_ranks_take_the_one_process_step(
    packed_runs, tiny_checkpoint: Path, strategy: str
) -> None:
    one = packed_runs("one", "trainer=cpu")
    two = packed_runs(strategy, "trainer=ddp_sim", f"strategy={strategy}")
    want = exported(one)
    assert max_diff(want, exported_start(tiny_checkpoint)) > 1e-2
    assert max_diff(want, exported(two)) < WEIGHT_TOL
    if strategy != "ddp":
        return
    (single,), ranks = probed(one).values(), list(probed(two).values())
    rows = [tuple(b["input_ids"][0].tolist()) for b in single["batches"][0]]
    assert len(rows) == 4 and any(int(b["sequence_ids"].max()) >= 1 for b in single["batches"][0])
    assert sorted(rows) == sorted(tuple(b["input_ids"][0].tolist()) for r in ranks for b in r["batches"][0])
    grads, got = single["grads"][0], ranks[0]["grads"][0]
    assert sorted(grads) == sorted(got)
    assert max(float((grads[k] - got[k]).abs().max()) for k in grads) < 1e-6
