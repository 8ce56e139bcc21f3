"""DeepSpeed ZeRO-2/3 in 2 CPU processes (trainer=ddp_sim, gloo): the same numbers as one process,
only the stage's trainable tensors, kill and exact resume, a gathered export, checkpoints read without
pickle."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from tests.checkpoint.helpers import pixels, prompt_logits
from tests.training.conftest import SMALL_DATA
from tests.training.train_process import run_train, start_train
from yivl.checkpoint.deepspeed_zero import read_zero_checkpoint
from yivl.checkpoint.load import load_pretrained
from yivl.checkpoint.trained import model_from_plan, read_run

ROOT = Path(__file__).resolve().parents[2]
# fp32 on 2 cores: measured max differences against one process were 5e-7 (loss) and 1.1e-5 (weights
# after 4 AdamW steps at lr 5e-4: Adam's normalisation turns summation-order noise into weight noise)
LOSS_TOL, WEIGHT_TOL = 1e-5, 1e-4
TIMEOUT = 900  # each run; a hung rendezvous must fail the test, not hang it


def run_args(tiny: Path, data_dir: Path, out: Path, *extra: str) -> list[str]:
    """4 optimizer steps of 4 samples (2 per micro-batch), a checkpoint every 2, per-batch losses logged."""
    return [
        f"model.path={tiny}",
        "model.build_if_missing=false",
        f"paths.data_dir={data_dir}",
        f"hydra.run.dir={out}",
        "data.batch_size=2",
        "data.group_by_length=false",  # the same global batches for 1 and 2 processes
        "global_batch_size=4",
        "trainer.accelerator=cpu",
        "trainer.max_steps=4",
        "trainer.limit_val_batches=0",
        "trainer.log_every_n_steps=1",
        "callbacks.model_checkpoint.every_n_train_steps=2",
        "val_generation=none",
        "extras.print_config=false",
        "+callbacks.loss_log._target_=tests.training.loss_log.LossLog",
        f"+callbacks.loss_log.dir={out}/losses",
        *SMALL_DATA,
        *extra,
    ]


def start(args: list[str]) -> subprocess.Popen:
    return start_train(args, DS_ACCELERATOR="cpu")


def train_py(args: list[str]) -> str:
    return run_train(args, TIMEOUT, DS_ACCELERATOR="cpu")


def step_losses(out: Path) -> list[float]:
    """The logged loss of each optimizer step: its token-weighted mean over all micro-batches and ranks
    (every rank logs the same all-reduced value)."""
    ranks = sorted((out / "losses").glob("rank*.json"))
    rows = [json.loads(r.read_text())["losses"] for r in ranks]
    assert all(r == rows[0] for r in rows)
    steps = [step for step, _ in rows[0]]
    assert steps == list(range(steps[0], steps[0] + len(steps)))  # consecutive (from 2 when resumed)
    return [loss for _, loss in rows[0]]


def exported(out: Path) -> dict[str, torch.Tensor]:
    tensors = dict(load_file(out / "export" / "model.safetensors"))
    (vit,) = (out / "export" / "vit").glob("*/model.safetensors")
    tensors.update({f"vit.{k}": v for k, v in load_file(vit).items()})
    return tensors


def max_diff(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> float:
    assert sorted(a) == sorted(b)
    return max(float((a[k].float() - b[k].float()).abs().max()) for k in a)


@pytest.fixture(scope="module")
def runs(tiny_checkpoint: Path, data_dir: Path, tmp_path_factory: pytest.TempPathFactory):
    """``runs(name, *overrides)``: the run folder of train.py with those overrides, run once per module."""
    done: dict[str, Path] = {}

    def get(name: str, *extra: str) -> Path:
        if name not in done:
            out = tmp_path_factory.mktemp(name)
            train_py(run_args(tiny_checkpoint, data_dir, out, *extra))
            done[name] = out
        return done[name]

    return get


ZERO3 = ("trainer=ddp_sim", "strategy=deepspeed_zero3")
STAGE1 = ("experiment=stage1", "module.image_size=null", "data=synthetic")
LORA = ("experiment=lora", "module.image_size=null", "data=synthetic")
ZERO2_STAGE1 = ("trainer=ddp_sim", "strategy=deepspeed_zero2", *STAGE1)
# full fine-tuning on packed rows: 48 samples make 24 rows of 384 tokens, dealt from one plan
PACKED = ("data.packing=true", "data.pack_length=384")
ZERO2_PACKED = ("trainer=ddp_sim", "strategy=deepspeed_zero2", *PACKED)
ZERO3_PACKED = ("trainer=ddp_sim", "strategy=deepspeed_zero3", *PACKED)
ONE_PROCESS = {(): "one_full", STAGE1: "one_stage1", PACKED: "one_packed"}


@pytest.mark.slow
@pytest.mark.parametrize(
    ("name", "overrides"),
    [
        ("zero3_full", ZERO3),
        ("zero2_stage1", ZERO2_STAGE1),
        ("zero3_offload_full", ("trainer=ddp_sim", "strategy=deepspeed_zero3_offload")),  # CPU Adam
        ("zero2_packed", ZERO2_PACKED),
        ("zero3_packed", ZERO3_PACKED),  # parameters gathered by hooks: the loss takes the module path
    ],
)
def test_two_processes_give_the_one_process_numbers(runs, name: str, overrides: tuple[str, ...]) -> None:
    stage = tuple(o for o in overrides if not o.startswith(("trainer=", "strategy=")))
    one = runs(ONE_PROCESS[stage], "trainer=cpu", *stage)
    two = runs(name, *overrides)
    ref, got = step_losses(one), step_losses(two)
    assert len(got) == len(ref) == 4
    assert max(abs(a - b) for a, b in zip(ref, got, strict=True)) < LOSS_TOL
    assert max_diff(exported(one), exported(two)) < WEIGHT_TOL
    ranks = [json.loads(p.read_text())["trainable"] for p in sorted((two / "losses").glob("rank*.json"))]
    assert len(ranks) == 2 and ranks[0] == ranks[1]
    assert ranks[0] == json.loads((one / "losses" / "rank0.json").read_text())["trainable"]
    if "experiment=stage1" in stage:  # LLM frozen: only the ViT and the projector train, on each rank
        assert {n.split(".")[1] for n in ranks[0]} == {"vision_tower", "mm_projector"}


@pytest.mark.slow
def test_zero3_checkpoint_is_gathered_trainable_state_and_export_gives_its_logits(runs) -> None:
    out = runs("zero3_full", *ZERO3)
    ckpt = out / "checkpoints" / "step0000004.ckpt"
    assert (ckpt / "latest").is_file()  # a DeepSpeed folder of 2 ranks' shards
    state = read_zero_checkpoint(ckpt)["state_dict"]
    trainable = json.loads((out / "losses" / "rank0.json").read_text())["trainable"]
    assert sorted(state) == sorted(trainable)  # gathered full tensors of what trains, nothing frozen
    model = load_pretrained(out / "export", dtype=torch.float32).model  # what infer.py loads
    params = dict(model.named_parameters())
    for name, value in state.items():
        assert params[name.removeprefix("model.")].shape == value.shape
        assert torch.equal(params[name.removeprefix("model.")], value)
    module = model_from_plan(*read_run(ckpt)).model.eval()  # the trained module, rebuilt from the shards
    image = pixels(model.config.image_size)
    assert torch.allclose(prompt_logits(model, image), prompt_logits(module, image), atol=1e-5)


@pytest.mark.slow
@pytest.mark.parametrize(
    ("name", "overrides"),
    [("zero3_full", ZERO3), ("zero2_stage1", ZERO2_STAGE1), ("zero2_packed", ZERO2_PACKED)],
)
def test_sigkill_then_resume_gives_the_uninterrupted_losses_and_weights(
    runs, tiny_checkpoint: Path, data_dir: Path, tmp_path: Path, name: str, overrides: tuple[str, ...]
) -> None:
    straight = runs(name, *overrides)
    out = tmp_path / "killed"
    args = run_args(tiny_checkpoint, data_dir, out, *overrides)
    # the run sleeps before step 3, after step 2's checkpoints are on disk: a kill then never tears a
    # checkpoint being written (a fast run could reach step 4's save before a poll saw step 2's)
    pause = ["+callbacks.pause._target_=tests.training.rank_probe.PauseAt", "+callbacks.pause.step=2"]
    proc = start([*args, *pause])
    deadline = time.monotonic() + TIMEOUT
    while not ((out / "pausing").exists() and (out / "checkpoints" / "last.ckpt" / "latest").is_file()):
        assert proc.poll() is None and time.monotonic() < deadline, "no checkpoint before the kill"
        time.sleep(0.05)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait(timeout=60)
    assert not (out / "export").exists()
    train_py([*args, "ckpt_path=last"])
    resumed = step_losses(out)  # the resumed process logged steps 3 and 4 only
    assert len(resumed) == 2
    assert [step for step, _ in json.loads((out / "losses" / "rank0.json").read_text())["losses"]] == [2, 3]
    assert max(abs(a - b) for a, b in zip(step_losses(straight)[2:], resumed, strict=True)) < LOSS_TOL
    assert max_diff(exported(straight), exported(out)) < WEIGHT_TOL


@pytest.mark.slow
def test_zero2_lora_checkpoint_holds_only_adapters_and_trainables(runs) -> None:
    out = runs("zero2_lora", "trainer=ddp_sim", "strategy=deepspeed_zero2", *LORA)
    trainable = json.loads((out / "losses" / "rank0.json").read_text())["trainable"]
    llm = [n for n in trainable if n.startswith("model.llm.")]
    assert llm and all(".lora_" in n for n in llm)
    shards = out / "checkpoints" / "step0000004.ckpt" / "checkpoint"
    on_disk = torch.load(shards / "mp_rank_00_model_states.pt", map_location="cpu", weights_only=True)
    assert sorted(on_disk["module"]) == sorted(trainable)  # exclude_frozen_parameters: adapter-sized
    assert sorted(read_zero_checkpoint(shards.parent)["state_dict"]) == sorted(trainable)
    assert (out / "export" / "config.json").is_file()  # merged into the published layout


@pytest.mark.slow
def test_qlora_under_zero2_gives_the_one_process_numbers(runs) -> None:
    """bitsandbytes' 4-bit LLM stays whole and frozen on each rank; only adapters and projector shard."""
    # no LoRA dropout: its random masks differ between one process and two ranks
    qlora = ("experiment=qlora", "module.image_size=null", "data=synthetic", "finetune.lora.dropout=0")
    one = runs("one_qlora", "trainer=cpu", *qlora)
    two = runs("zero2_qlora", "trainer=ddp_sim", "strategy=deepspeed_zero2", *qlora)
    assert max(abs(a - b) for a, b in zip(step_losses(one), step_losses(two), strict=True)) < LOSS_TOL
    assert max_diff(exported(one), exported(two)) < WEIGHT_TOL
