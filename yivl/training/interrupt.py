"""``last.ckpt`` at every epoch end and on Ctrl-C, and the resume command printed on the way out.

Ctrl-C (SIGINT) does not stop a run in the middle of a batch: the first press asks the run to stop after
the optimizer step in progress, where a checkpoint resumes exactly; ``last.ckpt`` is written there and
train.py exits 130 with the command that resumes. A second press stops at once (Lightning's own handling,
no checkpoint).
"""

from __future__ import annotations

import shlex
import signal
import threading
from collections.abc import Sequence
from pathlib import Path

import lightning as L

from yivl.errors import Interrupted

SAFE_PATH = set("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_./-:")


def resume_command(overrides: Sequence[str], run_dir: str, multirun: bool) -> str:
    """``python train.py <overrides> hydra.run.dir=<run_dir> ckpt_path=last`` (shell-quoted), the
    overrides without their own ``ckpt_path`` and ``hydra.run.dir``."""
    keep = [o for o in overrides if o.split("=", 1)[0].lstrip("+~") not in ("ckpt_path", "hydra.run.dir")]
    if not set(run_dir) <= SAFE_PATH:  # Hydra's own quoting, for paths with spaces or '=' in them
        run_dir = "'" + run_dir.replace("\\", "\\\\").replace("'", "\\'") + "'"
    keep += [f"hydra.run.dir={run_dir}", *(["hydra.mode=RUN"] if multirun else []), "ckpt_path=last"]
    return shlex.join(["python", "train.py", *keep])


def hydra_resume_command() -> str:
    """The resume command of the current Hydra job (the bare one outside Hydra, e.g. in tests)."""
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    if not HydraConfig.initialized():
        return "python train.py ckpt_path=last"
    hydra_cfg = HydraConfig.get()
    multirun = hydra_cfg.mode == RunMode.MULTIRUN
    return resume_command(list(hydra_cfg.overrides.task), hydra_cfg.runtime.output_dir, multirun)


class LastCheckpoint(L.Callback):
    """Writes ``<dirpath>/last.ckpt`` after each epoch's last batch and, after Ctrl-C, at the next optimizer
    step."""

    def __init__(self, dirpath: str | Path, resume: str) -> None:
        self.path = Path(dirpath) / "last.ckpt"
        self.resume = resume
        self.requested = threading.Event()
        self.previous_handler = None
        self.step_at_batch_start = -1

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if threading.current_thread() is threading.main_thread():
            self.previous_handler = signal.signal(signal.SIGINT, self.request_stop)

    def request_stop(self, signum: int, frame: object) -> None:
        self.requested.set()
        signal.signal(signal.SIGINT, signal.default_int_handler)  # a second Ctrl-C stops at once

    def on_train_batch_start(
        self, trainer: L.Trainer, pl_module: L.LightningModule, batch, batch_idx
    ) -> None:
        self.step_at_batch_start = trainer.global_step

    def on_train_batch_end(
        self, trainer: L.Trainer, pl_module: L.LightningModule, outputs, batch, batch_idx
    ) -> None:
        stepped = trainer.global_step != self.step_at_batch_start  # not in the middle of accumulation
        if stepped and self.stop_requested(trainer):
            self.stop(trainer)
        elif self.last_batch_of_epoch(trainer, batch_idx) and not trainer.fast_dev_run:
            self.save(trainer)

    @staticmethod
    def last_batch_of_epoch(trainer: L.Trainer, batch_idx: int) -> bool:
        """Saved here rather than in ``on_train_epoch_end``: there Lightning already counts the next
        epoch but not yet its batches, and the data position would skip that whole epoch on resume."""
        progress = trainer.fit_loop.epoch_loop.batch_progress
        return progress.is_last_batch or batch_idx + 1 >= trainer.num_training_batches

    def stop_requested(self, trainer: L.Trainer) -> bool:
        """Whether Ctrl-C reached any rank (all ranks agree, so they save and stop together)."""
        if trainer.world_size == 1:
            return self.requested.is_set()
        return trainer.strategy.reduce_boolean_decision(self.requested.is_set(), all=False)

    def stop(self, trainer: L.Trainer) -> None:
        self.save(trainer)
        raise Interrupted(f"interrupted at step {trainer.global_step}; resume with: {self.resume}")

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.restore_handler()
        if self.requested.is_set():  # Ctrl-C after the last step: the run is complete, the export not
            self.stop(trainer)

    def on_exception(
        self, trainer: L.Trainer, pl_module: L.LightningModule, exception: BaseException
    ) -> None:
        self.restore_handler()

    def restore_handler(self) -> None:
        if self.previous_handler is not None:
            signal.signal(signal.SIGINT, self.previous_handler)
            self.previous_handler = None

    def save(self, trainer: L.Trainer) -> None:
        trainer.save_checkpoint(self.path, weights_only=False)
