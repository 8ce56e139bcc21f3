"""Each distributed strategy gets the configuration it should (checked without GPUs or DeepSpeed)."""

from __future__ import annotations

import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
from lightning.pytorch.strategies import DDPStrategy, DeepSpeedStrategy, ModelParallelStrategy
from omegaconf import OmegaConf

from tests.training.conftest import compose_train
from yivl.training.fsdp2 import FSDP2Strategy
from yivl.training.launch import job_subprocess_command
from yivl.training.strategies import build_strategy, deepspeed_config, offloads_optimizer
from yivl.training.trainer import accumulation


def strategy(name: str) -> dict:
    return OmegaConf.to_container(compose_train([f"strategy={name}", "paths.output_dir=/tmp/x"]).strategy)


def lightning_formatted(config: dict, accumulate: int, clip: float, precision: str) -> dict:
    """Run Lightning's own DeepSpeed config formatting over ``config`` (no deepspeed import needed)."""
    from lightning.fabric.strategies.deepspeed import _format_precision_config

    trainer = SimpleNamespace(accumulate_grad_batches=accumulate, gradient_clip_val=clip)
    fake = SimpleNamespace(config=dict(config), lightning_module=SimpleNamespace(trainer=trainer))
    DeepSpeedStrategy._format_batch_size_and_grad_accum_config(fake)
    _format_precision_config(fake.config, precision, 0, 1000, 1, 16, 2)
    return fake.config


@pytest.mark.parametrize(
    ("name", "stage", "offload"),
    [("deepspeed_zero2", 2, False), ("deepspeed_zero3", 3, False), ("deepspeed_zero3_offload", 3, True)],
)
def test_deepspeed_configs(name: str, stage: int, offload: bool) -> None:
    group = strategy(name)
    config = deepspeed_config(group, micro_batch_size=4)
    zero = config["zero_optimization"]
    assert zero["stage"] == stage
    assert ("offload_optimizer" in zero, "offload_param" in zero) == (offload, offload)
    assert offloads_optimizer(group) is offload  # the module then uses DeepSpeed's CPU Adam
    assert group["exclude_frozen_parameters"] is True  # checkpoints: trainable tensors only
    if stage == 3:
        assert zero["stage3_gather_16bit_weights_on_model_save"] is True
    # What Lightning hands to deepspeed.initialize for stage 3's paper setting on 8 GPUs:
    final = lightning_formatted(config, accumulate=accumulation(256, 4, 8), clip=1.0, precision="bf16-mixed")
    assert final["train_micro_batch_size_per_gpu"] * final["gradient_accumulation_steps"] * 8 == 256
    assert final["gradient_clipping"] == 1.0
    assert final["bf16"] == {"enabled": True}
    assert "fp16" not in final


def test_fsdp_is_fsdp2_over_all_processes_with_gathered_checkpoints() -> None:
    built = build_strategy(strategy("fsdp"), 2)
    assert isinstance(built, FSDP2Strategy) and isinstance(built, ModelParallelStrategy)
    assert built._save_distributed_checkpoint is False  # one file, torch.load(weights_only=True)


def test_ddp_and_auto() -> None:
    assert isinstance(build_strategy(strategy("ddp"), 2), DDPStrategy)
    assert build_strategy(strategy("auto"), 2) == "auto"


def test_accumulation_reaches_the_global_batch() -> None:
    assert accumulation(4096, 16, 128) == 2  # stage 1 on 128 GPUs
    assert accumulation(256, 1, 8) == 32
    with pytest.raises(Exception, match="not a multiple"):
        accumulation(256, 3, 8)


def test_each_rank_relaunches_only_its_own_job(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """Inside a sweep, rank 1 gets the job's overrides and folder, as a single run: no nested sweep."""
    hydra_cfg = OmegaConf.create(
        {
            "overrides": {"task": ["module.optimizer.lr=2e-05", "hparams_search=optuna"]},
            "runtime": {"output_dir": str(tmp_path / "multiruns" / "1")},
        }
    )
    monkeypatch.setattr("hydra.core.hydra_config.HydraConfig.get", staticmethod(lambda: hydra_cfg))
    monkeypatch.setattr("hydra.utils.get_original_cwd", lambda: str(tmp_path))
    monkeypatch.setattr(sys, "argv", ["train.py", "-m", "module.optimizer.lr=1e-5,2e-5"])
    command, cwd = job_subprocess_command(local_rank=1)
    args = command[3:] if command[1] == "-m" else command[2:]  # python [-m module | script] args
    assert "-m" not in args and "module.optimizer.lr=1e-5,2e-5" not in args
    assert args[:2] == ["module.optimizer.lr=2e-05", "hparams_search=optuna"]
    assert f"hydra.run.dir='{tmp_path / 'multiruns' / '1'}'" in args
    assert "hydra.mode=RUN" in args and cwd == str(tmp_path)
