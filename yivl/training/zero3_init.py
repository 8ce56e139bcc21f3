"""ZeRO-3 without the base model in every rank's memory: partitioned before DeepSpeed's engine starts.

Rank 0 reads the base model, as one process would; the other ranks build the same model with its
parameters on the meta device (no weight memory). Then ``deepspeed.zero.Init(module=...)``, the call
DeepSpeed's engine itself makes on a model it receives whole, turns the parameters into ZeRO-3
partitions, here one at a time: a parameter gets real memory on the other ranks just before rank 0
broadcasts it, each rank keeps its 1/world partition and the full tensor is freed. The engine then
finds every parameter partitioned and partitions nothing again.

Peak memory per rank: rank 0 the whole model once (falling as it is partitioned), every other rank its
partition plus the tensor in flight. QLoRA is the exception: its 4-bit weights are quantized while they
are read, which the meta device cannot do, so under QLoRA every rank reads the base model.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Iterator, Mapping

import torch
import torch.distributed as dist
from lightning.pytorch.strategies import DeepSpeedStrategy
from torch import nn

from yivl.checkpoint.plan import RunPlan
from yivl.models.yivl import YiVL
from yivl.training.build import Dtypes, build_model, empty_model


def build_for_deepspeed(plan: RunPlan, dtypes: Dtypes, strategy: DeepSpeedStrategy) -> YiVL:
    """The plan's model for ``strategy``: ZeRO-3-partitioned (read on rank 0), else whole on the CPU."""
    if not strategy.zero_stage_3 or plan.finetune.method == "qlora" or dist.get_world_size() == 1:
        return build_model(plan, dtypes, "cpu")
    return build_partitioned(plan, dtypes, strategy.config, strategy.precision_plugin.convert_module)


def build_partitioned(
    plan: RunPlan, dtypes: Dtypes, config: Mapping, cast: Callable[[nn.Module], nn.Module]
) -> YiVL:
    """The plan's model, read on rank 0 and ZeRO-3-partitioned over all ranks for DeepSpeed ``config``.

    ``cast``: the precision's module cast (``*-true`` dtypes), applied before partitioning since
    Lightning applies it to the module only later, when it could no longer reach the partitions.
    """
    model = build_model(plan, dtypes, "cpu") if dist.get_rank() == 0 else empty_model(plan, dtypes)
    model = cast(model)
    partition(model, config)
    return model


def partition(model: nn.Module, config: Mapping) -> None:
    """Partition ``model`` (whole on rank 0, on the meta device elsewhere) for ZeRO-3 ``config``, in place."""
    import deepspeed

    for buffer in model.buffers():  # non-persistent buffers (rotary, position ids) are not in any file
        dist.broadcast(buffer.data, src=0)
    dtype = next(model.parameters()).dtype  # what DeepSpeed's engine passes for a model it partitions
    deepspeed.zero.Init(
        module=_OneAtATime(model), config_dict_or_path=copy.deepcopy(dict(config)), dtype=dtype
    )


class _OneAtATime(nn.Module):
    """``model`` as ``zero.Init`` sees it: its parameters one by one, a meta one made real only when its
    turn comes (rank 0's values are broadcast into it, then it is partitioned and freed)."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model  # a submodule, so zero.Init's fp32-buffer rules see the model's modules

    def parameters(self, recurse: bool = True) -> Iterator[nn.Parameter]:
        real: dict[int, nn.Parameter] = {}  # a parameter shared by two modules stays one parameter
        for module in list(self.model.modules()):
            for name, param in list(module._parameters.items()):
                if param is None or id(param) in real:
                    if param is not None:
                        module._parameters[name] = real[id(param)]
                    continue
                if param.is_meta:  # a new tensor: a meta tensor cannot take real data in place
                    real[id(param)] = nn.Parameter(
                        torch.empty(param.shape, dtype=param.dtype), param.requires_grad
                    )
                else:
                    real[id(param)] = param
                module._parameters[name] = real[id(param)]
                yield real[id(param)]
