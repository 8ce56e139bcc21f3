"""Optimizer parameter groups (one learning rate per part, no decay on norms and biases) and the schedule.

Yi-VL's paper gives one learning rate per stage; LLaVA's LoRA recipe uses a separate projector rate.
We make one group pair per part (vision tower, projector, LLM): the parameters that decay and those that
do not (biases and every norm's weights, like LLaVA's trainer). Only trainable parameters are included.
"""

from __future__ import annotations

import math
from collections.abc import Iterator

import torch
from torch import nn

from yivl.checkpoint.plan import OptimizerSettings
from yivl.models.yivl import YiVL, module_groups


def is_norm(module: nn.Module) -> bool:
    """LayerNorm, RMSNorm and transformers' LlamaRMSNorm (matched by name: it is not an nn subclass)."""
    return isinstance(module, nn.LayerNorm | nn.RMSNorm) or type(module).__name__.endswith("Norm")


def _named_trainable(part: nn.Module) -> Iterator[tuple[str, nn.Parameter, bool]]:
    """(name, parameter, decays) for each trainable parameter of ``part``."""
    for module_name, module in part.named_modules():
        for leaf, param in module.named_parameters(recurse=False):
            if param.requires_grad:
                name = f"{module_name}.{leaf}" if module_name else leaf
                yield name, param, not (is_norm(module) or leaf == "bias")


def param_groups(model: YiVL, optimizer: OptimizerSettings) -> list[dict]:
    """AdamW groups ``{"name", "params", "lr", "weight_decay"}``; names like ``llm`` / ``llm.no_decay``."""
    groups = []
    for part_name, part in module_groups(model).items():
        lr = optimizer.lr_for(part_name)
        decay, no_decay = [], []
        for _, param, decays in _named_trainable(part):
            (decay if decays else no_decay).append(param)
        if decay:
            groups.append(
                {"name": part_name, "params": decay, "lr": lr, "weight_decay": optimizer.weight_decay}
            )
        if no_decay:
            groups.append(
                {"name": f"{part_name}.no_decay", "params": no_decay, "lr": lr, "weight_decay": 0.0}
            )
    return groups


def build_optimizer(
    groups: list[dict], optimizer: OptimizerSettings, cpu_adam: bool = False
) -> torch.optim.Optimizer:
    """AdamW over ``groups``; DeepSpeed's CPU Adam (same maths) when its optimizer state lives on the CPU."""
    kwargs = {"betas": tuple(optimizer.betas), "eps": float(optimizer.eps)}
    if cpu_adam:
        from deepspeed.ops.adam import DeepSpeedCPUAdam

        return DeepSpeedCPUAdam(groups, adamw_mode=True, **kwargs)
    return torch.optim.AdamW(groups, **kwargs)


class WarmupCosine:
    """LambdaLR factor: linear warmup to 1 over ``warmup`` steps, then cosine down to ``min_ratio``.

    A class (not a closure) so that LambdaLR saves its numbers in checkpoints.
    """

    def __init__(self, total_steps: int, warmup_ratio: float, min_ratio: float) -> None:
        self.total = max(1, int(total_steps))
        self.warmup = min(self.total, round(warmup_ratio * self.total))
        self.min_ratio = float(min_ratio)

    def __call__(self, step: int) -> float:
        if step < self.warmup:
            return (step + 1) / (self.warmup + 1)
        progress = min(1.0, (step - self.warmup) / max(1, self.total - self.warmup))
        return self.min_ratio + (1 - self.min_ratio) * 0.5 * (1 + math.cos(math.pi * progress))
