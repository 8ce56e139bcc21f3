"""DDP and FSDP2 in 2 CPU processes (trainer=ddp_sim) give the numbers of one process.

Every run: tiny model, 6 steps of a global batch of 4 (1 process: 2 micro-batches of 2; 2 processes:
one micro-batch of 2 each), the data in the same order (group_by_length off: the sampler's global
batches are then the same for any world size), a checkpoint every 2 steps. Each rank's trainable
names, micro-batch losses and parameter/optimizer bytes come from tests.training.rank_probe.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from tests.training.conftest import SMALL_DATA
from yivl.checkpoint.load import load_pretrained
from yivl.checkpoint.shards import find_weights, iter_tensors

ROOT = Path(__file__).resolve().parents[2]
# fp32, 6 steps (docs/training.md): losses differed by at most 4.8e-7, weights by 1.5e-5 (Adam turns
# reduction-order noise in near-zero gradients into steps of up to the learning rate's size)
LOSS_TOL, WEIGHT_TOL = 1e-5, 1e-4
# LoRA dropout off: each rank draws its own masks, which one process would draw in another order
LORA = ["experiment=lora", "finetune.lora.r=4", "finetune.lora.alpha=8", "finetune.lora.dropout=0.0"]
LORA += ["module.image_size=null"]
# 48 synthetic samples pack into 24 rows of 384 tokens (two a row) in every epoch: the 6 steps of 4 rows
# are one epoch, dealt from one plan (1 process: 2 micro-batches of 2 rows; 2 processes: 2 rows each)
PACKED = ["data.packing=true", "data.pack_length=384"]
TIMEOUT = 600


def command(tiny: Path, data: Path, run: Path, *extra: str) -> list[str]:
    return [
        sys.executable,
        "train.py",
        f"model.path={tiny}",
        "model.build_if_missing=false",
        f"paths.data_dir={data}",
        "data=synthetic",
        f"hydra.run.dir={run}",
        "data.batch_size=2",
        "global_batch_size=4",
        "data.group_by_length=false",
        "trainer.accelerator=cpu",
        "trainer.precision=32-true",
        "trainer.max_steps=6",
        "trainer.limit_val_batches=0",
        "trainer.log_every_n_steps=1",
        "callbacks.model_checkpoint.every_n_train_steps=2",
        "val_generation=none",
        "extras.print_config=false",
        "+callbacks.probe._target_=tests.training.rank_probe.RankProbe",
        f"+callbacks.probe.dir={run / 'probe'}",
        *SMALL_DATA,
        *extra,
    ]


def train_py(args: list[str]) -> None:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    result = subprocess.run(args, cwd=ROOT, env=env, capture_output=True, text=True, timeout=TIMEOUT)
    assert result.returncode == 0, result.stderr[-3000:]


def probes(run: Path) -> list[dict]:
    return [json.loads(p.read_text()) for p in sorted((run / "probe").glob("rank*.json"))]


def step_losses(run: Path) -> list[float]:
    """The loss of each optimizer step: the mean over its micro-batches on every rank."""
    ranks = probes(run)
    per_step = ranks[0]["accumulate"] * len(ranks)
    flat = [loss for i in range(len(ranks[0]["losses"])) for loss in (r["losses"][i] for r in ranks)]
    if len(ranks) == 1:
        flat = ranks[0]["losses"]
    return [sum(flat[i : i + per_step]) / per_step for i in range(0, len(flat), per_step)]


def saved(ckpt: Path) -> dict[str, torch.Tensor]:
    return torch.load(ckpt, map_location="cpu", weights_only=True)["state_dict"]


def max_diff(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> float:
    assert set(a) == set(b)
    return max(float((a[k].float() - b[k].float()).abs().max()) for k in a)


def exported(folder: Path) -> dict[str, torch.Tensor]:
    weights = find_weights(folder, "export")
    return dict(iter_tensors(weights, list(weights.tensors)))


@pytest.fixture(scope="module")
def runs(tiny_checkpoint: Path, data_dir: Path, tmp_path_factory: pytest.TempPathFactory):
    """``runs(name, *overrides)``: the run folder of train.py with ``overrides``, run once per module."""
    done: dict[str, Path] = {}
    base = tmp_path_factory.mktemp("runs")

    def get(name: str, *overrides: str) -> Path:
        if name not in done:
            done[name] = base / name
            train_py(command(tiny_checkpoint, data_dir, done[name], *overrides))
        return done[name]

    return get


SETUPS = {"full": [], "lora": LORA, "packed": PACKED}  # packed: a full fine-tune on packed rows


@pytest.mark.slow
@pytest.mark.parametrize("finetune", ["full", "lora", "packed"])
@pytest.mark.parametrize("strategy", ["ddp", "fsdp"])
def test_two_processes_give_the_losses_and_weights_of_one(runs, strategy: str, finetune: str) -> None:
    one = runs(f"one-{finetune}", *SETUPS[finetune])
    two = runs(f"{strategy}-{finetune}", "trainer=ddp_sim", f"strategy={strategy}", *SETUPS[finetune])
    want, got = step_losses(one), step_losses(two)
    assert len(want) == len(got) == 6
    assert max(abs(a - b) for a, b in zip(want, got, strict=True)) < LOSS_TOL
    assert (
        max_diff(saved(one / "checkpoints" / "last.ckpt"), saved(two / "checkpoints" / "last.ckpt"))
        < WEIGHT_TOL
    )
    (rank0, rank1), (single,) = probes(two), probes(one)
    assert rank0["trainable"] == rank1["trainable"] == single["trainable"]
    if strategy == "fsdp":  # each rank holds about half, the two halves all (up to dim-0 padding)
        for key in ("param_bytes", "optim_bytes"):
            assert 0.4 * single[key] < rank0[key] < 0.6 * single[key]
            assert single[key] <= rank0[key] + rank1[key] < 1.05 * single[key]
    else:
        assert rank0["param_bytes"] == rank1["param_bytes"] == single["param_bytes"]


@pytest.mark.slow
def test_fsdp2_export_is_the_gathered_model_in_the_published_layout(runs) -> None:
    one = runs("one-lora", *LORA)
    two = runs("fsdp-lora", "trainer=ddp_sim", "strategy=fsdp", *LORA)
    want, got = exported(one / "export"), exported(two / "export")
    assert (
        max_diff(want, got) < WEIGHT_TOL
    )  # every tensor whole: a rank's shard would not even match in shape
    model_one = load_pretrained(one / "export", dtype=torch.float32).model
    model_two = load_pretrained(two / "export", dtype=torch.float32).model
    ids = torch.tensor([[1, 5, 9, 12, 7]])
    with torch.no_grad():
        a = model_one.llm(input_ids=ids).logits
        b = model_two.llm(input_ids=ids).logits
    assert float((a - b).abs().max()) < 1e-4


@pytest.mark.slow
def test_fsdp2_lora_checkpoint_is_adapter_sized(runs) -> None:
    two = runs("fsdp-lora", "trainer=ddp_sim", "strategy=fsdp", *LORA)
    state = saved(two / "checkpoints" / "last.ckpt")
    (rank0, _) = probes(two)
    assert sorted(state) == sorted(rank0["trainable"])
    assert any("lora_A" in k for k in state) and not any(".base_layer." in k for k in state)
    assert not any("embed_tokens" in k for k in state)


@pytest.mark.slow
def test_fsdp2_stage1_trains_exactly_the_tower_and_projector_on_every_rank(runs) -> None:
    two = runs(
        "fsdp-stage1", "trainer=ddp_sim", "strategy=fsdp", "experiment=stage1", "module.image_size=null"
    )
    ranks = probes(two)
    assert len(ranks) == 2 and ranks[0]["trainable"] == ranks[1]["trainable"]
    names = ranks[0]["trainable"]
    assert names and all(n.startswith(("model.vision_tower.", "model.mm_projector.")) for n in names)
    assert any(n.startswith("model.mm_projector.") for n in names)
    assert any(n.startswith("model.vision_tower.clip.encoder.layers.0.") for n in names)
    assert sorted(saved(two / "checkpoints" / "last.ckpt")) == sorted(names)


@pytest.mark.slow
@pytest.mark.parametrize("finetune", ["lora", "packed"])
def test_fsdp2_sigkill_then_ckpt_path_last_gives_the_uninterrupted_losses_and_weights(
    runs, tiny_checkpoint: Path, data_dir: Path, tmp_path: Path, finetune: str
) -> None:
    setup = ("trainer=ddp_sim", "strategy=fsdp", *SETUPS[finetune])
    straight = runs(f"fsdp-{finetune}", *setup)
    run = tmp_path / "killed"
    args = command(tiny_checkpoint, data_dir, run, *setup)
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    pause = ["+callbacks.pause._target_=tests.training.rank_probe.PauseAt", "+callbacks.pause.step=3"]
    proc = subprocess.Popen(
        [*args, *pause],
        cwd=ROOT,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    try:
        deadline = time.monotonic() + TIMEOUT
        while not (run / "pausing").exists():
            assert proc.poll() is None and time.monotonic() < deadline, "the run did not reach step 3"
            time.sleep(0.1)
        os.killpg(proc.pid, signal.SIGKILL)  # both ranks, mid-run, after the step-2 checkpoint
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=60)
    assert not (run / "checkpoints" / "step0000006.ckpt").exists() and not (run / "export").exists()
    train_py([*args, "ckpt_path=last"])  # from the step-2 checkpoint: steps 3-6, probed anew
    resumed = step_losses(run)
    assert len(resumed) == 4
    assert max(abs(a - b) for a, b in zip(step_losses(straight)[2:], resumed, strict=True)) < LOSS_TOL
    got, want = saved(run / "checkpoints" / "last.ckpt"), saved(straight / "checkpoints" / "last.ckpt")
    assert max_diff(got, want) < WEIGHT_TOL
