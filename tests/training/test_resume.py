"""Checkpoints hold only what trains; resuming continues exactly (weights, losses, lr, RNG, data)."""

from __future__ import annotations

import csv
from pathlib import Path

import pytest
import torch

from tests.training.conftest import make_train_cfg
from yivl.errors import YivlError
from yivl.training.run import train

# LoRA with dropout (uses the RNG) and a trainable ViT: adapters, full tensors and RNG all matter.
RUN = [
    "experiment=lora",
    "module.image_size=null",
    "module.train.vision_tower=true",
    "finetune.lora.r=4",
    "finetune.lora.alpha=8",
    "finetune.lora.dropout=0.1",
    "trainer.max_steps=4",
    "trainer.limit_val_batches=0",
    "trainer.log_every_n_steps=1",
    "callbacks.model_checkpoint.every_n_train_steps=2",
    "export.enabled=false",
]
PACKED = ["data.packing=true", "data.pack_length=512"]  # rows of several samples, own position ids


def losses(run_dir: Path) -> dict[int, float]:
    with open(run_dir / "csv" / "metrics.csv", encoding="utf-8") as f:
        return {int(r["step"]): float(r["train/loss"]) for r in csv.DictReader(f) if r.get("train/loss")}


def trained_state(module: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {n: p.detach().clone() for n, p in module.named_parameters() if p.requires_grad}


@pytest.fixture(scope="module", params=[False, True], ids=["padded", "packed"])
def run(request: pytest.FixtureRequest) -> list[str]:
    """The run's overrides, with samples padded to their batch or packed into rows."""
    return [*RUN, *PACKED] if request.param else RUN


@pytest.fixture(scope="module")
def straight(
    run: list[str], tiny_checkpoint: Path, data_dir: Path, tmp_path_factory: pytest.TempPathFactory
) -> tuple:
    """4 steps in one go (saving a checkpoint every 2 steps), shared by the tests below."""
    out = tmp_path_factory.mktemp("straight")
    result = train(make_train_cfg(tiny_checkpoint, data_dir, out, tuple(run)))
    return out, trained_state(result.module), result


def test_checkpoint_holds_only_trainable_tensors(straight: tuple) -> None:
    out, _, result = straight
    ckpt = torch.load(out / "checkpoints" / "step0000002.ckpt", map_location="cpu", weights_only=True)
    trainable = {f"model.{n}" for n, p in result.module.model.named_parameters() if p.requires_grad}
    assert set(ckpt["state_dict"]) == trainable
    assert not any(".base_layer." in k or "llm.model.embed_tokens" in k for k in ckpt["state_dict"])
    assert ckpt["optimizer_states"] and ckpt["yivl"]["stage"] == "lora"
    assert all(
        isinstance(v, (str, int, float, bool, dict, list, type(None)))
        for v in ckpt["hyper_parameters"].values()
    )


def test_resume_continues_exactly(straight: tuple, run: list[str], train_cfg, tmp_path: Path) -> None:
    out, final, first = straight
    resumed = train(train_cfg(*run, f"ckpt_path={out / 'checkpoints' / 'step0000002.ckpt'}", out=tmp_path))
    assert resumed.trainer.global_step == 4
    for name, tensor in trained_state(resumed.module).items():
        torch.testing.assert_close(tensor, final[name], atol=0, rtol=0, msg=name)
    straight_losses, resumed_losses = losses(out), losses(tmp_path)
    assert set(resumed_losses) == {2, 3}
    for step, loss in resumed_losses.items():
        assert loss == pytest.approx(straight_losses[step], abs=1e-6)
    lr = [g["lr"] for g in first.trainer.optimizers[0].param_groups]
    assert [g["lr"] for g in resumed.trainer.optimizers[0].param_groups] == lr


def test_resuming_another_stage_says_what_differs(straight: tuple, train_cfg, tmp_path: Path) -> None:
    out = straight[0]
    ckpt = out / "checkpoints" / "last.ckpt"
    cfg = train_cfg("experiment=stage3", "module.image_size=null", f"ckpt_path={ckpt}", out=tmp_path)
    with pytest.raises(
        YivlError, match=r"comes from another run: stage 'lora' \(this run: 'stage3'\)"
    ) as err:
        train(cfg)
    assert "finetune 'lora' (this run: 'full')" in str(err.value) and "\n" not in str(err.value)
