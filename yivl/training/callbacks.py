"""Callbacks: the progress bar (plain progress lines without a terminal), the table of trainable/frozen
parameters per module, the PNG loss plot."""

from __future__ import annotations

import math
import sys
import time
from collections.abc import Iterable, Mapping
from datetime import timedelta
from pathlib import Path

import lightning as L
from lightning.pytorch.callbacks import RichProgressBar
from lightning.pytorch.loggers import CSVLogger
from lightning.pytorch.utilities import rank_zero_only
from rich.console import Console
from rich.table import Table
from torch import nn

from yivl.models.lora import is_adapter_param


def param_count(param: nn.Parameter) -> int:
    """Number of weights, counting a packed 4-bit tensor by its unpacked shape."""
    quant_state = getattr(param, "quant_state", None)
    return int(quant_state.shape.numel()) if quant_state is not None else param.numel()


def param_rows(model: nn.Module) -> list[tuple[str, int, int]]:
    """(part, trainable, frozen) for vision_tower, mm_projector, llm and the LLM's LoRA adapters."""
    counts: dict[str, list[int]] = {}
    for name, param in model.named_parameters():
        part = name.split(".", 1)[0]
        if is_adapter_param(name):
            part = f"{part} (LoRA adapters)"
        row = counts.setdefault(part, [0, 0])
        row[0 if param.requires_grad else 1] += param_count(param)
    return [(part, trainable, frozen) for part, (trainable, frozen) in counts.items()]


def render_param_table(rows: Iterable[tuple[str, int, int]]) -> Table:
    """A rich table of the rows plus a total line."""
    table = Table(title="Parameters")
    for column in ("module", "trainable", "frozen", "trainable %"):
        table.add_column(column, justify="left" if column == "module" else "right")
    rows = list(rows)
    total_trainable, total_frozen = sum(r[1] for r in rows), sum(r[2] for r in rows)
    for part, trainable, frozen in [*rows, ("total", total_trainable, total_frozen)]:
        share = 100 * trainable / max(1, trainable + frozen)
        table.add_row(part, f"{trainable:,}", f"{frozen:,}", f"{share:.1f}")
    return table


class ProgressBar(RichProgressBar):
    """Rich progress bar showing loss, learning rate (scientific notation) and tokens/s (integer).

    When stdout is not a terminal (nohup, SLURM) rich draws the bar only at epoch end, so a plain line
    (:func:`progress_line`) is printed every ``log_every_s`` seconds as well.
    """

    def __init__(self, leave: bool = False, log_every_s: float = 30.0) -> None:
        super().__init__(leave=leave)
        self.log_every_s = log_every_s
        self.plain_lines = not sys.stdout.isatty()
        self.started = (0.0, 0)  # (time, optimizer step) when this process started training
        self.last_line = 0.0

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        super().on_train_start(trainer, pl_module)
        self.started = (time.monotonic(), trainer.global_step)
        self.last_line = self.started[0]

    def on_train_batch_end(
        self, trainer: L.Trainer, pl_module: L.LightningModule, outputs, batch, batch_idx
    ) -> None:
        super().on_train_batch_end(trainer, pl_module, outputs, batch, batch_idx)
        now = time.monotonic()
        if not self.plain_lines or not trainer.is_global_zero or now - self.last_line < self.log_every_s:
            return
        self.last_line = now
        start, start_step = self.started
        done = trainer.global_step - start_step
        total = trainer.estimated_stepping_batches
        eta = (now - start) / done * (total - trainer.global_step) if done and math.isfinite(total) else None
        epochs = (trainer.current_epoch + 1, trainer.max_epochs)
        line = progress_line(epochs, (trainer.global_step, total), trainer.progress_bar_metrics, eta)
        print(line, flush=True)

    def get_metrics(self, trainer: L.Trainer, pl_module: L.LightningModule) -> dict:
        items = super().get_metrics(trainer, pl_module)
        items.pop("v_num", None)
        if "lr" in items:
            items["lr"] = f"{float(items['lr']):.2e}"
        if "tok/s" in items:
            items["tok/s"] = f"{float(items['tok/s']):,.0f}"
        return items


def progress_line(
    epochs: tuple[int, int | None], steps: tuple[int, float], metrics: Mapping, eta_s: float | None
) -> str:
    """``epoch 1/8 step 120/2000 loss 2.3456 lr 4.90e-04 tok/s 1,234 eta 0:07:45`` (unknowns left out)."""
    (epoch, max_epochs), (step, total) = epochs, steps
    parts = [f"epoch {epoch}/{max_epochs}" if max_epochs and max_epochs > 0 else f"epoch {epoch}"]
    parts.append(f"step {step}/{int(total)}" if math.isfinite(total) else f"step {step}")
    for key, label, fmt in (("train/loss", "loss", ".4f"), ("lr", "lr", ".2e"), ("tok/s", "tok/s", ",.0f")):
        if key in metrics:
            parts.append(f"{label} {float(metrics[key]):{fmt}}")
    if eta_s is not None:
        parts.append(f"eta {timedelta(seconds=round(eta_s))}")
    return " ".join(parts)


class ParamTable(L.Callback):
    """Prints trainable and frozen parameter counts per module when training starts."""

    @rank_zero_only
    def on_fit_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        Console().print(render_param_table(param_rows(pl_module.model)))


class LossPlot(L.Callback):
    """Writes ``filename`` (training and validation loss per optimizer step) beside the CSV logs.

    The points are part of the checkpoint, so a resumed run's plot shows the whole history.
    """

    def __init__(self, filename: str = "loss.png") -> None:
        self.filename = filename
        self.train: list[tuple[int, float]] = []
        self.val: list[tuple[int, float]] = []

    def on_train_batch_end(
        self, trainer: L.Trainer, pl_module: L.LightningModule, outputs, batch, batch_idx
    ) -> None:
        if isinstance(outputs, dict) and "loss" in outputs:
            self.train.append((trainer.global_step, float(outputs["loss"])))

    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        loss = trainer.callback_metrics.get("val/loss")
        if loss is not None and not trainer.sanity_checking:
            self.val.append((trainer.global_step, float(loss)))
            self.write(trainer)

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.write(trainer)

    def path(self, trainer: L.Trainer) -> Path:
        """Beside metrics.csv when a CSV logger runs, else in the run directory."""
        csv = next((lg for lg in trainer.loggers if isinstance(lg, CSVLogger)), None)
        return Path(csv.log_dir if csv else trainer.default_root_dir) / self.filename

    @rank_zero_only
    def write(self, trainer: L.Trainer) -> None:
        if not self.train or trainer.fast_dev_run:
            return
        plot_losses(self.train, self.val, self.path(trainer))

    def state_dict(self) -> dict:
        return {"train": self.train, "val": self.val}

    def load_state_dict(self, state_dict: dict) -> None:
        self.train = [tuple(p) for p in state_dict["train"]]
        self.val = [tuple(p) for p in state_dict["val"]]


def plot_losses(train: list[tuple[int, float]], val: list[tuple[int, float]], path: Path) -> None:
    """PNG of the training loss (mean per optimizer step) and the validation loss."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot as plt

    per_step: dict[int, list[float]] = {}
    for step, loss in train:
        per_step.setdefault(step, []).append(loss)
    fig, ax = plt.subplots(figsize=(7, 4))
    ax.plot(list(per_step), [sum(v) / len(v) for v in per_step.values()], label="train", lw=1)
    if val:
        ax.plot([s for s, _ in val], [v for _, v in val], "o-", label="validation")
    ax.set_xlabel("optimizer step")
    ax.set_ylabel("loss")
    ax.grid(alpha=0.3)
    ax.legend()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100, bbox_inches="tight")
    plt.close(fig)
