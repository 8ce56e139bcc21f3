"""A callback the multi-process tests add with ``+callbacks.probe._target_=...``: what each rank saw.

Writes ``<dir>/rank<R>.json``: the trainable parameter names, every micro-batch loss (un-normalized by
gradient accumulation) and the bytes of parameters and optimizer state this rank holds.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import lightning as L
import torch

from yivl.training.build import trainable_names
from yivl.training.fsdp2 import shard_sizes


class RankProbe(L.Callback):
    def __init__(self, dir: str) -> None:
        self.dir = Path(dir)
        self.losses: list[float] = []
        self.trainable: list[str] = []

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.trainable = trainable_names(pl_module)

    def on_before_backward(
        self, trainer: L.Trainer, pl_module: L.LightningModule, loss: torch.Tensor
    ) -> None:
        self.losses.append(float(loss.detach()) * trainer.accumulate_grad_batches)

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        sizes = shard_sizes(pl_module, trainer.optimizers[0])
        record = {
            "trainable": self.trainable,
            "losses": self.losses,
            "accumulate": trainer.accumulate_grad_batches,
        }
        self.dir.mkdir(parents=True, exist_ok=True)
        (self.dir / f"rank{trainer.global_rank}.json").write_text(json.dumps({**record, **sizes}))


class PauseAt(L.Callback):
    """Sleeps before optimizer step ``step`` (the checkpoints of the earlier steps are written): the
    moment a test kills the run."""

    def __init__(self, step: int, seconds: float = 300.0) -> None:
        self.step, self.seconds = step, seconds

    def on_train_batch_start(
        self, trainer: L.Trainer, pl_module: L.LightningModule, batch, batch_idx: int
    ) -> None:
        if trainer.global_step == self.step:
            if trainer.is_global_zero:  # tells the test the checkpoints are on disk
                (Path(trainer.default_root_dir) / "pausing").touch()
            time.sleep(self.seconds)
