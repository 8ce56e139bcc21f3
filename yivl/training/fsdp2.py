"""``strategy=fsdp``: PyTorch FSDP2 (``torch.distributed.fsdp.fully_shard``) through Lightning's
``ModelParallelStrategy``, on GPUs (nccl) and on the CPU (gloo).

Each LLM decoder layer and each ViT encoder layer is one FSDP2 unit, the rest of the model (embeddings,
LLM norm and head, projector, tower stem) the root unit. FSDP2 shards every parameter on its own
(a DTensor per parameter, no FlatParameter), so a unit may mix frozen and trainable parameters: only the
trainable ones get gradients, reduce-scattered, and optimizer state.

Loading: rank 0 reads the base model; the other ranks build the same model on the meta device (no
weight memory); after sharding, rank 0 broadcasts one tensor at a time and every rank keeps its own
1/world slice. Checkpoints are one file gathered on rank 0 holding only the trainable parameters and
their optimizer state, loadable with ``torch.load(weights_only=True)``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
from lightning.pytorch.core.optimizer import LightningOptimizer
from lightning.pytorch.strategies import ModelParallelStrategy
from torch import nn
from torch.distributed.checkpoint.state_dict import (
    StateDictOptions,
    get_model_state_dict,
    get_optimizer_state_dict,
    set_model_state_dict,
    set_optimizer_state_dict,
)
from torch.distributed.device_mesh import DeviceMesh
from torch.distributed.fsdp import fully_shard
from torch.optim import Optimizer

from yivl.checkpoint.layout import read_config
from yivl.checkpoint.plan import RunPlan
from yivl.models.empty_init import empty_init
from yivl.models.yivl import YiVL
from yivl.training.build import Dtypes, build_model, prepare_model


class FSDP2Strategy(ModelParallelStrategy):
    """FSDP2 data parallel over all processes (no tensor parallel); gathered trainable-only checkpoints."""

    def __init__(self) -> None:
        super().__init__(save_distributed_checkpoint=False)

    def setup_environment(self) -> None:
        # ModelParallelStrategy's "auto" means tensor parallel within a node; here all ranks shard data
        self._data_parallel_size = self.num_nodes * self.num_processes
        self._tensor_parallel_size = 1
        super().setup_environment()

    def lightning_module_state_dict(self) -> dict[str, Any]:
        """The trainable parameters, gathered in full on rank 0 (frozen ones are never gathered)."""
        options = StateDictOptions(full_state_dict=True, cpu_offload=True, ignore_frozen_params=True)
        return get_model_state_dict(self.model, options=options)

    def optimizer_state(self, optimizer: Optimizer) -> dict[str, Any]:
        """The optimizer state gathered on rank 0, keyed by parameter name."""
        optimizer = optimizer._optimizer if isinstance(optimizer, LightningOptimizer) else optimizer
        options = StateDictOptions(full_state_dict=True, cpu_offload=True)
        return get_optimizer_state_dict(self.model, optimizer, options=options)

    @property
    def restore_checkpoint_after_setup(self) -> bool:
        # The model is sharded in configure_model, so its weights can be restored before setup. Restoring
        # after setup (Lightning's choice) would restore the datamodule's position only after
        # configure_optimizers built the train loader (estimated_stepping_batches): a resumed run would
        # start its epoch over.
        return False

    @property
    def lightning_restore_optimizer(self) -> bool:
        return True

    def load_checkpoint(
        self, checkpoint_path: str | Path, weights_only: bool | None = None
    ) -> dict[str, Any]:
        """Read a checkpoint written by this strategy (``weights_only``) and hand each rank its shards."""
        path = Path(self.broadcast(checkpoint_path))
        checkpoint = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
        set_model_state_dict(self.model, checkpoint.pop("state_dict"), options=LOAD_OPTIONS)
        return checkpoint

    def load_optimizer_state_dict(self, checkpoint: dict[str, Any]) -> None:
        for optimizer, state in zip(self.optimizers, checkpoint["optimizer_states"], strict=True):
            set_optimizer_state_dict(self.model, optimizer, state, options=LOAD_OPTIONS)


LOAD_OPTIONS = StateDictOptions(full_state_dict=True, broadcast_from_rank0=True, strict=False)
"""Full tensors (read on every rank, rank 0's broadcast) to shards; checkpoints hold only what trains."""


def shard_model(model: YiVL, mesh: DeviceMesh) -> YiVL:
    """``fully_shard`` each LLM decoder layer and ViT encoder layer, then the root; in place."""
    for layer in (*model.llm.model.layers, *model.vision_tower.clip.encoder.layers):
        fully_shard(layer, mesh=mesh)
    fully_shard(model, mesh=mesh)
    return model


def build_sharded(plan: RunPlan, dtypes: Dtypes, mesh: DeviceMesh, device: torch.device) -> YiVL:
    """The plan's model sharded over ``mesh``: read on rank 0 only, broadcast tensor by tensor.

    Peak memory: rank 0 holds the whole model once (as the single-process loader does), the other
    ranks only their shard plus the tensor in flight.
    """
    rank = dist.get_rank()
    model = build_model(plan, dtypes, "cpu") if rank == 0 else empty_model(plan, dtypes)
    full = model.state_dict() if rank == 0 else {}
    shard_model(model, mesh)
    if rank != 0:
        model.to_empty(device=device)
    model.to(device)
    for buffer in model.buffers():  # non-persistent buffers (rotary, position ids) are not in state dicts
        dist.broadcast(buffer.data, src=0)
    options = StateDictOptions(full_state_dict=True, broadcast_from_rank0=True)
    set_model_state_dict(model, full, options=options)
    del full
    return model


def empty_model(plan: RunPlan, dtypes: Dtypes) -> YiVL:
    """The model :func:`yivl.training.build.build_model` returns, with parameters on the meta device."""
    config, _ = read_config(Path(plan.model.path))
    with empty_init():
        model = YiVL(config, attn_implementation=plan.model.attn_implementation)
    for param in model.parameters():
        if param.is_floating_point():
            param.data = param.data.to(dtypes.param)
    return prepare_model(model, plan, dtypes, torch.device("meta"))


def local_bytes(tensors: list[torch.Tensor]) -> int:
    """Bytes this rank holds of ``tensors`` (a DTensor counts its local shard)."""
    total = 0
    for tensor in tensors:
        local = tensor.to_local() if hasattr(tensor, "to_local") else tensor
        total += local.numel() * local.element_size()
    return total


def shard_sizes(model: nn.Module, optimizer: torch.optim.Optimizer) -> dict[str, int]:
    """This rank's parameter bytes and optimizer-state bytes."""
    states = [v for state in optimizer.state.values() for v in state.values() if torch.is_tensor(v)]
    return {
        "param_bytes": local_bytes(list(model.parameters())),
        "optim_bytes": local_bytes([s for s in states if s.dim() > 0]),
    }
