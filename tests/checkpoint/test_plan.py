"""The run plan: typed, frozen, to/from the plain dict a .ckpt stores; the image size resolved once."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
import torch

from yivl.checkpoint.plan import (
    CheckpointFlags,
    Finetune,
    LoraSettings,
    ModelRef,
    OptimizerSettings,
    RunPlan,
    ScheduleSettings,
    TrainParts,
    resolve_image_size,
)
from yivl.errors import YivlError
from yivl.models.presets import preset


def todays_hparams(base: Path) -> dict:
    """A LoRA run's ``hyper_parameters`` exactly as train.py wrote them before the plan was typed."""
    return {
        "model": {"name": "tiny", "path": str(base)},
        "stage": "lora",
        "image_size": None,
        "train": {"vision_tower": False, "projector": True, "llm": "lora"},
        "finetune": {"method": "lora", "lora": {"r": 4, "alpha": 8, "dropout": 0.05}},
        "optimizer": {
            "lr": 2.0e-4,
            "vision_tower_lr": 2.0e-5,
            "projector_lr": 2.0e-5,
            "weight_decay": 0.0,
            "betas": [0.9, 0.999],
            "eps": 1.0e-8,
        },
        "scheduler": {"warmup_ratio": 0.03, "min_lr_ratio": 0.1},
        "gradient_checkpointing": {"llm": True, "vision_tower": False},
        "precision": "32-true",
        "cpu_adam": False,
    }


def test_todays_checkpoint_hparams_give_a_typed_plan_at_the_base_resolution(tiny_checkpoint: Path) -> None:
    plan = RunPlan.from_dict(todays_hparams(tiny_checkpoint))
    assert plan == RunPlan(
        model=ModelRef("tiny", str(tiny_checkpoint)),
        stage="lora",
        image_size=112,  # null meant the base model's: the tiny model's 112 px, read from its config.json
        train=TrainParts(vision_tower=False, projector=True, llm="lora"),
        finetune=Finetune("lora", LoraSettings(r=4, alpha=8, dropout=0.05)),
        optimizer=OptimizerSettings(2.0e-4, 2.0e-5, 2.0e-5, 0.0, (0.9, 0.999), 1.0e-8),
        scheduler=ScheduleSettings(warmup_ratio=0.03, min_lr_ratio=0.1),
        gradient_checkpointing=CheckpointFlags(llm=True, vision_tower=False),
        precision="32-true",
        cpu_adam=False,
    )
    assert plan.has_adapters and plan.lora_block() == {"r": 4, "alpha": 8, "dropout": 0.05}
    assert plan.optimizer.lr_for("llm") == 2.0e-4 and plan.optimizer.lr_for("mm_projector") == 2.0e-5
    with pytest.raises(dataclasses.FrozenInstanceError):
        plan.image_size = 224  # type: ignore[misc]


def test_to_dict_is_todays_layout_with_the_size_filled_in_and_round_trips(
    tiny_checkpoint: Path, tmp_path: Path
) -> None:
    plan = RunPlan.from_dict(todays_hparams(tiny_checkpoint))
    todays = todays_hparams(tiny_checkpoint)
    # keys added since: the backend and loss chunking these checkpoints trained with
    model = {**todays["model"], "attn_implementation": "sdpa", "loss_chunk_size": 0}
    assert plan.to_dict() == {**todays, "image_size": 112, "model": model}
    assert RunPlan.from_dict(plan.to_dict()) == plan
    torch.save({"hyper_parameters": plan.to_dict()}, tmp_path / "x.ckpt")  # plain data only
    stored = torch.load(tmp_path / "x.ckpt", weights_only=True)["hyper_parameters"]
    assert RunPlan.from_dict(stored) == plan


def test_full_finetune_keeps_no_lora_or_quant_block(tiny_checkpoint: Path) -> None:
    data = {**todays_hparams(tiny_checkpoint), "finetune": {"method": "full"}, "image_size": 56}
    plan = RunPlan.from_dict(data)
    assert plan.finetune == Finetune("full") and plan.image_size == 56
    assert plan.to_dict()["finetune"] == {"method": "full"}
    with pytest.raises(YivlError, match=r"^run plan: train.llm=lora but finetune=full has no lora block$"):
        plan.lora_block()


def test_a_given_base_replaces_the_recorded_one_and_its_size_is_the_one_read(
    tiny_checkpoint: Path, tmp_path: Path
) -> None:
    recorded = {**todays_hparams(tmp_path / "gone"), "image_size": None}
    plan = RunPlan.from_dict(recorded, base=tiny_checkpoint)
    assert plan.model == ModelRef("tiny", str(tiny_checkpoint)) and plan.image_size == 112
    assert plan.on_base(tmp_path).model == ModelRef("tiny", str(tmp_path))
    with pytest.raises(YivlError, match="model directory not found"):
        RunPlan.from_dict(recorded)  # a null size needs the base model's config.json


def test_a_plan_not_from_train_py_is_refused_naming_the_key(tiny_checkpoint: Path) -> None:
    data = todays_hparams(tiny_checkpoint)
    del data["optimizer"]["eps"]
    with pytest.raises(
        YivlError, match=r"^run plan: optimizer.eps is missing; the checkpoint was not written by train.py$"
    ):
        RunPlan.from_dict(data)
    data = {**todays_hparams(tiny_checkpoint), "extra": 1}
    with pytest.raises(YivlError, match=r"^run plan: unknown key extra; known: model, stage, image_size, "):
        RunPlan.from_dict(data)
    with pytest.raises(YivlError, match=r"^run plan: train must be a mapping, got str$"):
        RunPlan.from_dict({**todays_hparams(tiny_checkpoint), "train": "full"})


def test_null_image_size_means_the_base_models_and_is_checked_once() -> None:
    config = preset("tiny")
    assert resolve_image_size(None, config) == 112
    assert resolve_image_size(224, config) == 224
    with pytest.raises(
        YivlError, match=r"^module.image_size=100 is not a positive multiple of the ViT patch size 14$"
    ):
        resolve_image_size(100, config)
