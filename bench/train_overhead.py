"""Framework overhead: seconds per optimizer step of train.py against a plain PyTorch loop, same batches.

Both sides train the tiny model with the default job's settings (AdamW with the same parameter groups,
warmup + cosine, gradient clipping 1.0) on the same synthetic batches, in one process, taking turns
(plain, train.py, plain, train.py, ...) after one untimed warm-up run. train.py runs through
``yivl.training.run.train`` with its default callbacks (rich progress bar, checkpointing, CSV logger, loss
plot), a timer callback added. The plain loop
reads the same DataLoader and does forward, backward, clip, step, zero_grad, schedule. Target <= 1.10x.

    python bench/train_overhead.py [--steps 40] [--warmup 10] [--rounds 3] [--markdown]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import lightning as L
import torch
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf
from tables import print_table

from yivl.checkpoint.layout import read_config
from yivl.checkpoint.tiny import build_tiny_checkpoint
from yivl.training.build import Dtypes, build_model
from yivl.training.data import build_datamodule, model_inputs
from yivl.training.optim import WarmupCosine, build_optimizer, param_groups
from yivl.training.run import module_plan, train

ROOT = Path(__file__).resolve().parents[1]


class StepTimer(L.Callback):
    """Wall time from one training batch start to the next (one optimizer step at accumulation 1)."""

    def __init__(self) -> None:
        self.starts: list[float] = []

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        self.starts.append(time.perf_counter())

    def on_train_end(self, trainer, pl_module) -> None:
        self.starts.append(time.perf_counter())


def config(work: Path, model: Path, steps: int):
    overrides = [
        f"model.path={model}",
        "model.build_if_missing=false",
        f"paths.data_dir={work / 'data'}",
        f"paths.output_dir={work / 'run'}",
        "trainer.accelerator=cpu",
        f"trainer.max_steps={steps}",
        "trainer.limit_val_batches=0",
        "export.enabled=false",
        "extras.print_config=false",
        f"+callbacks.step_timer._target_={StepTimer.__module__}.StepTimer",
    ]
    with initialize_config_dir(str(ROOT / "configs"), version_base="1.3"):
        return compose("train", overrides=overrides)


def lightning_steps(work: Path, model: Path, steps: int) -> list[float]:
    result = train(config(work, model, steps))
    timer = next(cb for cb in result.trainer.callbacks if isinstance(cb, StepTimer))
    return [b - a for a, b in zip(timer.starts, timer.starts[1:], strict=False)]


def plain_steps(work: Path, model_dir: Path, steps: int) -> list[float]:
    """The same work without Lightning: same model build, optimizer, schedule, clipping, batches."""
    cfg = config(work, model_dir, steps)
    plain = OmegaConf.to_container(cfg, resolve=True)
    base_config, vit_dir = read_config(model_dir)
    plan = module_plan(plain, model_dir, base_config, "32-true")
    torch.manual_seed(cfg.seed)
    model = build_model(plan, Dtypes.for_precision("32-true"))
    datamodule = build_datamodule(cfg.data, model_inputs(model_dir, vit_dir, base_config, plan.image_size))
    datamodule.prepare_data()
    optimizer = build_optimizer(param_groups(model, plan.optimizer), plan.optimizer)
    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, WarmupCosine(steps, 0.03, 0.1))
    times, last = [], time.perf_counter()
    for step, batch in enumerate(datamodule.train_dataloader()):
        if step == steps:
            break
        loss = model(**batch).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        schedule.step()
        now = time.perf_counter()
        times.append(now - last)
        last = now
    return times


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=40)
    parser.add_argument("--warmup", type=int, default=10, help="first steps of each run left out")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--markdown", action="store_true")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        model = build_tiny_checkpoint(work / "tiny")
        plain_steps(work / "warm", model, args.steps)  # untimed: first-touch allocations, kernel caches
        results: dict[str, list[float]] = {"plain PyTorch loop": [], "train.py (Lightning)": []}
        for round_ in range(args.rounds):
            results["plain PyTorch loop"] += plain_steps(work / f"p{round_}", model, args.steps)[
                args.warmup :
            ]
            results["train.py (Lightning)"] += lightning_steps(work / f"l{round_}", model, args.steps)[
                args.warmup :
            ]
    report(results, args)


def report(results: dict[str, list[float]], args: argparse.Namespace) -> None:
    base = statistics.median(results["plain PyTorch loop"])
    rows = [
        (
            name,
            f"{statistics.median(t):.4f}",
            f"{statistics.mean(t):.4f}",
            f"{statistics.median(t) / base:.3f}x",
        )
        for name, t in results.items()
    ]
    title = (
        f"tiny Yi-VL, batch 8, CPU ({torch.get_num_threads()} threads), "
        f"{args.rounds} x {args.steps} steps each, "
        f"first {args.warmup} of each run left out"
    )
    columns = ("loop", "s/step (median)", "s/step (mean)", "vs plain")
    print_table(title, columns, rows, args.markdown)


if __name__ == "__main__":
    main()
