"""A test callback (``+callbacks.loss_log``) that writes each rank's per-batch loss to a JSON file."""

from __future__ import annotations

import json
from pathlib import Path

import lightning as L


class LossLog(L.Callback):
    """``<dir>/rank<r>.json``: {"losses": [[optimizer step, train/loss of that step], ...], "trainable":
    [names]} (needs log_every_n_steps=1). ``train/loss`` is the step's token-weighted mean over all its
    micro-batches and ranks, logged on its last micro-batch. ``trainable``: the parameters this rank
    trains, as the optimizer sees them.
    """

    def __init__(self, dir: str) -> None:
        self.dir = Path(dir)
        self.rows: list[list[float]] = []
        self.trainable: list[str] = []
        self.step = 0

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.step = trainer.global_step  # a resumed run starts at its checkpoint's step
        self.trainable = [n for n, p in pl_module.named_parameters() if p.requires_grad]

    def on_train_batch_end(self, trainer: L.Trainer, *args: object) -> None:
        if trainer.global_step != self.step:  # this batch ended an optimizer step
            self.rows.append([self.step, float(trainer.callback_metrics["train/loss"])])
            self.step = trainer.global_step

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.dir.mkdir(parents=True, exist_ok=True)
        (self.dir / f"rank{trainer.global_rank}.json").write_text(
            json.dumps({"losses": self.rows, "trainable": self.trainable})
        )
