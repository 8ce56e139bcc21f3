"""Distributed strategies from the ``strategy`` config group: DDP, DeepSpeed ZeRO 2/3/offload, FSDP2.

``deepspeed_config`` returns the plain configuration DeepSpeed receives, so it can be checked without
the hardware; ``build_strategy`` hands it to Lightning. FSDP2 lives in ``yivl.training.fsdp2``.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping

from lightning.pytorch.strategies import DDPStrategy, Strategy

from yivl.errors import YivlError
from yivl.training.deepspeed_cpu import CPUDeepSpeedStrategy

SHARDING = ("deepspeed", "fsdp")


def deepspeed_config(strategy: Mapping, micro_batch_size: int) -> dict:
    """The DeepSpeed JSON as a dict: the group's ``config`` plus the per-device batch.

    Lightning fills in ``gradient_accumulation_steps`` (from the trainer), ``gradient_clipping`` (from
    ``trainer.gradient_clip_val``) and the bf16/fp16 blocks (from the precision); setting them here too
    would be refused or could disagree.
    """
    config = copy.deepcopy(dict(strategy["config"]))
    config["train_micro_batch_size_per_gpu"] = int(micro_batch_size)
    return config


def offloads_optimizer(strategy: Mapping) -> bool:
    """True when the strategy keeps the optimizer state in CPU memory (needs DeepSpeed's CPU Adam)."""
    if strategy["name"] != "deepspeed":
        return False
    zero = strategy["config"].get("zero_optimization", {})
    return zero.get("offload_optimizer", {}).get("device") in ("cpu", "nvme")


def zero_stage(strategy: Mapping) -> int:
    """The ZeRO stage of a DeepSpeed strategy, 0 for the others."""
    if strategy["name"] != "deepspeed":
        return 0
    return int(strategy["config"].get("zero_optimization", {}).get("stage", 0))


def build_strategy(strategy: Mapping, micro_batch_size: int) -> Strategy | str:
    """The Lightning strategy object (or ``"auto"``) for the ``strategy`` config group."""
    name = strategy["name"]
    if name == "auto":
        return "auto"
    if name == "ddp":
        return DDPStrategy(find_unused_parameters=bool(strategy["find_unused_parameters"]))
    if name == "deepspeed":
        return CPUDeepSpeedStrategy(
            config=deepspeed_config(strategy, micro_batch_size),
            exclude_frozen_parameters=bool(strategy["exclude_frozen_parameters"]),
        )
    if name == "fsdp":
        from yivl.training.fsdp2 import FSDP2Strategy

        return FSDP2Strategy()
    raise YivlError(
        f"unknown strategy name {name!r} in the strategy config; use auto, ddp, deepspeed or fsdp"
    )
