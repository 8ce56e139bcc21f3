"""Distributed strategies from the ``strategy`` config group: DDP, DeepSpeed ZeRO 2/3/offload, FSDP.

``deepspeed_config`` and ``fsdp_kwargs`` return the plain configuration each strategy receives, so it can
be checked without the hardware; ``build_strategy`` hands it to Lightning.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping

from lightning.pytorch.strategies import DDPStrategy, FSDPStrategy, Strategy

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


def fsdp_kwargs(strategy: Mapping) -> dict:
    """FSDPStrategy arguments: one FSDP unit per LLM decoder layer and per ViT encoder layer."""
    from transformers.models.clip.modeling_clip import CLIPEncoderLayer
    from transformers.models.llama.modeling_llama import LlamaDecoderLayer

    return {
        "auto_wrap_policy": {LlamaDecoderLayer, CLIPEncoderLayer},
        "sharding_strategy": str(strategy["sharding_strategy"]),
        "cpu_offload": bool(strategy["cpu_offload"]),
        "state_dict_type": str(strategy["state_dict_type"]),
        "limit_all_gathers": bool(strategy["limit_all_gathers"]),
        "use_orig_params": bool(strategy["use_orig_params"]),
    }


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
        return FSDPStrategy(**fsdp_kwargs(strategy))
    raise YivlError(
        f"unknown strategy name {name!r} in the strategy config; use auto, ddp, deepspeed or fsdp"
    )
