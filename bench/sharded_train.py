"""Sharded training on 2 CPU processes, tiny model: step time against DDP, per-rank bytes and peak RSS.

Each strategy (a ``configs/strategy`` option) runs ``train.py trainer=ddp_sim strategy=<name>`` for
``--steps`` optimizer steps (global batch 4: one micro-batch of 2 per rank) with the :class:`Probe`
callback below, which writes per rank: the median step time (first 2 steps left out: warm-up), the bytes
of parameters and optimizer state the rank holds (a sharded tensor counts its local shard) and the
peak RSS. One row per strategy and rank.

    python bench/sharded_train.py [--strategies ddp,fsdp] [--steps 20] [--markdown]

An engine whose optimizer keeps its state outside ``optimizer.state`` (DeepSpeed) adds its case to
:func:`held_bytes`, and the environment its launch needs to ``STRATEGY_ENV``.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import lightning as L
from rich.console import Console
from rich.table import Table

ROOT = Path(__file__).resolve().parents[1]
MiB = 2**20
STRATEGY_ENV: dict[str, dict[str, str]] = {}
"""Extra environment variables per strategy name (e.g. an accelerator override)."""


def held_bytes(trainer: L.Trainer, module: L.LightningModule) -> dict[str, int]:
    """This rank's parameter and optimizer-state bytes."""
    from yivl.training.fsdp2 import shard_sizes

    return shard_sizes(module, trainer.optimizers[0])


class Probe(L.Callback):
    """Writes ``<dir>/rank<R>.json``: median step seconds, held bytes, peak RSS."""

    def __init__(self, dir: str) -> None:
        self.dir = Path(dir)
        self.starts: dict[int, float] = {}
        self.times: list[float] = []

    def on_train_batch_start(
        self, trainer: L.Trainer, pl_module: L.LightningModule, batch, batch_idx: int
    ) -> None:
        self.starts.setdefault(trainer.global_step, time.perf_counter())

    def on_train_batch_end(
        self, trainer: L.Trainer, pl_module: L.LightningModule, outputs, batch, idx: int
    ) -> None:
        step = trainer.global_step - 1  # the optimizer step that just ended
        if step in self.starts and len(self.times) == step:
            self.times.append(time.perf_counter() - self.starts[step])

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        figures = {
            "step_s": statistics.median(self.times[2:] or self.times),
            **held_bytes(trainer, pl_module),
        }
        figures["peak_rss"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # Linux: KiB
        self.dir.mkdir(parents=True, exist_ok=True)
        (self.dir / f"rank{trainer.global_rank}.json").write_text(json.dumps(figures))


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--strategies", default="ddp,fsdp", help="comma-separated strategy options")
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--workdir", type=Path, default=None, help="where runs go (default: system temp)")
    parser.add_argument("--markdown", action="store_true", help="print a Markdown table instead")
    return parser.parse_args(argv)


def run(name: str, steps: int, work: Path) -> list[dict]:
    """Train with strategy ``name`` in 2 CPU processes; each rank's figures."""
    run_dir = work / name
    args = [
        f"paths.data_dir={work / 'data'}",
        f"model.path={work / 'tiny'}",
        f"hydra.run.dir={run_dir}",
        "trainer=ddp_sim",
        f"strategy={name}",
        "data.batch_size=2",
        "data.train.0.num_train=48",  # as the tests: every batch holds an image (DDP needs the tower used)
        "global_batch_size=4",
        f"trainer.max_steps={steps}",
        "trainer.limit_val_batches=0",
        "val_generation=none",
        "export.enabled=false",
        "extras.print_config=false",
        "callbacks.model_checkpoint.every_n_train_steps=100000",
        "+callbacks.probe._target_=sharded_train.Probe",
        f"+callbacks.probe.dir={run_dir / 'probe'}",
    ]
    pythonpath = os.pathsep.join([str(ROOT), str(ROOT / "bench")])
    env = {**os.environ, "PYTHONPATH": pythonpath, **STRATEGY_ENV.get(name, {})}
    done = subprocess.run(
        [sys.executable, "train.py", *args], cwd=ROOT, env=env, capture_output=True, text=True
    )
    if done.returncode != 0:
        sys.exit(f"strategy={name} failed (exit {done.returncode}):\n{done.stderr[-4000:]}")
    return [json.loads(p.read_text()) for p in sorted((run_dir / "probe").glob("rank*.json"))]


def report(results: dict[str, list[dict]], markdown: bool) -> None:
    base = statistics.mean(r["step_s"] for r in results.get("ddp", next(iter(results.values()))))
    header = ["strategy", "rank", "step ms", "vs ddp", "params MiB", "optimizer MiB", "peak RSS MiB"]
    lines = [
        [
            name,
            str(rank),
            f"{r['step_s'] * 1e3:.0f}",
            f"{r['step_s'] / base:.2f}x",
            f"{r['param_bytes'] / MiB:.2f}",
            f"{r['optim_bytes'] / MiB:.2f}",
            f"{r['peak_rss'] / MiB:.0f}",
        ]
        for name, ranks in results.items()
        for rank, r in enumerate(ranks)
    ]
    if markdown:
        print("| " + " | ".join(header) + " |\n|" + "---|" * len(header))
        print("\n".join("| " + " | ".join(line) + " |" for line in lines))
        return
    table = Table(*header, title="2 CPU processes, tiny model, fp32")
    for line in lines:
        table.add_row(*line)
    Console().print(table)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    from yivl.checkpoint.tiny import build_tiny_checkpoint

    work = Path(tempfile.mkdtemp(dir=args.workdir))
    build_tiny_checkpoint(work / "tiny", seed=0)
    results = {name: run(name, args.steps, work) for name in args.strategies.split(",")}
    report(results, args.markdown)


if __name__ == "__main__":
    main()
