"""A Lightning callback that reports the data module's skipped and repaired training samples."""

from __future__ import annotations

import logging

import lightning as L

from yivl.data.datamodule import YiVLDataModule
from yivl.data.reasons import describe

log = logging.getLogger("yivl.data")


class SkippedSamplesLogger(L.Callback):
    """The counts so far as ``data/skipped/<reason>`` and ``data/repaired/<repair>`` metrics (logged at
    every batch, so the loggers write them at the trainer's ``log_every_n_steps``), and one console line
    when the skipped total grew, checked every ``every_n_steps`` optimizer steps. Needs a
    :class:`YiVLDataModule`; configured in ``configs/callbacks/default.yaml``."""

    def __init__(self, every_n_steps: int = 100) -> None:
        self.every_n_steps = max(1, int(every_n_steps))
        self._last_total = 0

    def on_train_batch_end(
        self, trainer: L.Trainer, pl_module: L.LightningModule, outputs, batch, batch_idx
    ) -> None:
        datamodule = trainer.datamodule
        if not isinstance(datamodule, YiVLDataModule):
            return
        counts, repairs = datamodule.skip_counts(), datamodule.repair_counts()
        metrics = {f"data/skipped/{k}": float(v) for k, v in counts.items()}
        metrics.update({f"data/repaired/{k}": float(v) for k, v in repairs.items()})
        if metrics:
            pl_module.log_dict(metrics, rank_zero_only=True)
        total = sum(counts.values())
        if trainer.global_step % self.every_n_steps or total <= self._last_total:
            return
        if trainer.is_global_zero:
            log.warning(
                "step %d: %d samples skipped so far (%s); repaired: %s",
                trainer.global_step,
                total,
                describe(counts),
                describe(repairs),
            )
        self._last_total = total
