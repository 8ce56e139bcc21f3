"""A Lightning callback that reports the data module's skipped and repaired samples every N steps."""

from __future__ import annotations

import logging

import lightning as L

from yivl.data.reasons import describe

log = logging.getLogger("yivl.data")


class SkippedSamplesLogger(L.Callback):
    """Every ``every_n_steps`` optimizer steps: log ``data/skipped/<reason>`` and ``data/repaired/<repair>``
    counts to the loggers and one line to the console when the skipped total grew. Needs a
    :class:`YiVLDataModule`."""

    def __init__(self, every_n_steps: int = 100) -> None:
        self.every_n_steps = max(1, int(every_n_steps))
        self._last_total = 0

    def on_train_batch_end(
        self, trainer: L.Trainer, pl_module: L.LightningModule, outputs, batch, batch_idx
    ) -> None:
        datamodule = getattr(trainer, "datamodule", None)
        if (
            datamodule is None
            or not hasattr(datamodule, "skip_counts")
            or trainer.global_step % self.every_n_steps
        ):
            return
        counts, repairs = datamodule.skip_counts(), datamodule.repair_counts()
        total = sum(counts.values())
        metrics = {f"data/skipped/{k}": float(v) for k, v in counts.items()}
        metrics.update({f"data/repaired/{k}": float(v) for k, v in repairs.items()})
        if metrics:
            pl_module.log_dict(metrics, rank_zero_only=True)
        if total > self._last_total and trainer.is_global_zero:
            log.warning(
                "step %d: %d samples skipped so far (%s); repaired: %s",
                trainer.global_step,
                total,
                describe(counts),
                describe(repairs),
            )
        self._last_total = total
