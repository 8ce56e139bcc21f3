"""DeepSpeed ZeRO on CPU processes (gloo): the same engine as on GPUs, so its code paths run in CI.

Lightning's ``DeepSpeedStrategy`` refuses any accelerator but CUDA, although DeepSpeed itself has a CPU
accelerator (``DS_ACCELERATOR=cpu``, gloo collectives). On ``accelerator=cpu`` this subclass skips
Lightning's CUDA check and its check that device indices match local ranks (CPU devices have none),
and hands DeepSpeed ``device_rank=-1`` (its "no device index") instead of ``None``. Everything else
(engine, sharding, checkpoints) is Lightning's and DeepSpeed's own; on GPUs it is the parent class.
It is for tests and small CPU runs, not for speed.

On every device, resuming reads DeepSpeed's shards with ``torch.load(weights_only=True)``
(``WeightsOnlyCheckpointEngine``): DeepSpeed's own checkpoint engine unpickles them.

Resuming happens in two parts. Lightning restores a DeepSpeed checkpoint only after ``setup``, since the
engine that reads the shards exists only then; but ``setup`` already builds the train loader (the
schedule needs its length), so the data position would arrive too late and the resumed epoch would
start over. Here Lightning's part of the checkpoint (loops, callbacks, data position, RNG) is read
before ``setup``, like any other strategy's, and the engine reads its shards (weights, optimizer) at
the end of ``setup``.
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path
from typing import Any

import lightning as L
import torch
from lightning.fabric.strategies.deepspeed import _validate_checkpoint_directory
from lightning.fabric.utilities.seed import reset_seed
from lightning.pytorch.accelerators import CPUAccelerator
from lightning.pytorch.strategies import DDPStrategy, DeepSpeedStrategy
from lightning.pytorch.trainer.states import TrainerFn

from yivl.errors import YivlError


class CPUDeepSpeedStrategy(DeepSpeedStrategy):
    """``DeepSpeedStrategy`` that also runs on ``accelerator=cpu`` (DeepSpeed's CPU accelerator, gloo)."""

    strategy_name = "deepspeed_cpu"

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._pending_shards: Path | None = None  # a checkpoint folder whose shards setup() reads

    def setup_environment(self) -> None:
        if not isinstance(self.accelerator, CPUAccelerator):
            super().setup_environment()
            return
        # DeepSpeed picks its accelerator once, at first use; without CUDA it falls back to the CPU
        # with a warning. Saying so explicitly keeps the choice if a GPU build of torch is installed.
        os.environ.setdefault("DS_ACCELERATOR", "cpu")
        DDPStrategy.setup_environment(self)  # the parent's method minus its CUDA check

    def setup_distributed(self) -> None:
        if not isinstance(self.accelerator, CPUAccelerator):
            super().setup_distributed()
            return
        reset_seed()
        self.set_world_ranks()
        self._init_deepspeed_distributed()

    def _setup_model_and_optimizer(
        self,
        model: torch.nn.Module,
        optimizer: torch.optim.Optimizer | None,
        lr_scheduler: object | None = None,
    ) -> tuple:
        """The parent's ``deepspeed.initialize`` call, with ``device_rank=-1`` on the CPU (the parent
        passes ``root_device.index``, None for a CPU device, which DeepSpeed compares with 0)."""
        if not isinstance(self.accelerator, CPUAccelerator):
            return super()._setup_model_and_optimizer(model, optimizer, lr_scheduler)
        import deepspeed

        engine, ds_optimizer, _, _ = deepspeed.initialize(
            args=argparse.Namespace(device_rank=-1),
            config=self.config,
            model=model,
            model_parameters=[p for p in model.parameters() if p.requires_grad],
            optimizer=optimizer,
            lr_scheduler=lr_scheduler,
            dist_init_required=False,
        )
        return engine, ds_optimizer

    @property
    def restore_checkpoint_after_setup(self) -> bool:
        # a single full-weights file (load_full_weights) goes Lightning's way: gathered into the engine
        return self.load_full_weights

    def load_checkpoint(self, checkpoint_path: Any, weights_only: bool | None = None) -> dict[str, Any]:
        """Before ``setup``: this rank's client state; the shards are read by :meth:`setup`."""
        if self.load_full_weights:
            return super().load_checkpoint(checkpoint_path, weights_only)
        from yivl.checkpoint.deepspeed_zero import zero_client_state

        _validate_checkpoint_directory(checkpoint_path)
        self._pending_shards = Path(checkpoint_path)
        return zero_client_state(self._pending_shards, self.global_rank)

    def setup(self, trainer: L.Trainer) -> None:
        super().setup(trainer)
        path, self._pending_shards = self._pending_shards, None
        if path is not None:
            self._load_shards(path, trainer.state.fn == TrainerFn.FITTING)

    def _load_shards(self, path: Path, fitting: bool) -> None:
        """The engine's part of a checkpoint (what Lightning's ``load_checkpoint`` reads), weights-only."""
        from yivl.training.deepspeed_engine import use_weights_only_loading

        use_weights_only_loading(self.deepspeed_engine)
        loaded, _ = self.deepspeed_engine.load_checkpoint(
            str(path),
            load_optimizer_states=fitting,
            load_lr_scheduler_states=False,  # Lightning restores the schedule
            load_module_strict=self.lightning_module.strict_loading,
        )
        if loaded is None:
            raise YivlError(f"DeepSpeed could not read the shards of {path}; resume a folder train.py wrote")
