"""A test callback (``+callbacks.grads``): the batches and gradients of the first optimizer steps.

Keeps, for the first ``steps`` optimizer steps, every micro-batch (on the CPU) and the gradient of every
trainable parameter right before the optimizer step (after DDP's all-reduce, before clipping). With
``dir`` set, rank R writes them to ``<dir>/rank<R>.pt`` (tensors only: read with weights_only=True).
"""

from __future__ import annotations

from pathlib import Path

import lightning as L
import torch

from yivl.training.build import trainable_names


class GradProbe(L.Callback):
    def __init__(self, dir: str | None = None, steps: int = 1) -> None:
        self.dir = None if dir is None else Path(dir)
        self.steps = steps
        self.batches: list[list[dict[str, torch.Tensor]]] = [[] for _ in range(steps)]
        self.grads: list[dict[str, torch.Tensor]] = []

    def on_train_batch_start(
        self, trainer: L.Trainer, pl_module: L.LightningModule, batch, batch_idx
    ) -> None:
        if trainer.global_step < self.steps:
            self.batches[trainer.global_step].append({k: v.detach().cpu().clone() for k, v in batch.items()})

    def on_before_optimizer_step(self, trainer: L.Trainer, pl_module: L.LightningModule, optimizer) -> None:
        if trainer.global_step < self.steps:
            params = [p for p in pl_module.parameters() if p.requires_grad]
            grads = [torch.zeros_like(p) if p.grad is None else p.grad.detach().clone() for p in params]
            self.grads.append(dict(zip(trainable_names(pl_module), grads, strict=True)))

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self.dir is not None:
            self.dir.mkdir(parents=True, exist_ok=True)
            record = {"grads": self.grads, "batches": self.batches}
            torch.save(record, self.dir / f"rank{trainer.global_rank}.pt")
