"""Sharded training on the tiny model in 2 CPU processes: step time against DDP, per-rank bytes, peak RSS.

For each strategy in ``--strategies`` it runs ``train.py trainer=ddp_sim strategy=<name>`` (Lightning
starts rank 1) with a callback that records, on every rank: the wall time of each optimizer step, the
bytes of the parameters this rank holds (ZeRO-3: its partition), the bytes of the optimizer state it
holds (AdamW moments, plus DeepSpeed's fp32 master partitions where they are separate tensors), and the
process's peak RSS. One table row per strategy; step time is the median after ``--warmup`` steps.

    python bench/sharded_train.py [--strategies ddp,fsdp,deepspeed_zero2,deepspeed_zero3] [--steps 10]
        [--warmup 3] [--markdown]
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
import torch

ROOT = Path(__file__).resolve().parents[1]
MiB = 2**20


def _bytes(tensors) -> int:
    """Bytes this rank holds of ``tensors``; an FSDP2 ``DTensor`` counts its local shard only."""
    local = (t.to_local() if hasattr(t, "to_local") else t for t in tensors)
    return sum(t.numel() * t.element_size() for t in local)


def local_param_bytes(module: torch.nn.Module) -> int:
    """Bytes of the parameters this rank holds: ZeRO-3 keeps only its partition (``ds_tensor``), FSDP2
    its shard of each ``DTensor``."""
    return _bytes(p.ds_tensor if hasattr(p, "ds_tensor") else p for p in module.parameters())


def local_optimizer_bytes(optimizer: torch.optim.Optimizer, module: torch.nn.Module) -> int:
    """AdamW moments, plus the tensors the base optimizer steps that are not the model's own parameters
    (DeepSpeed's flat fp32 master partitions)."""
    base = optimizer.optimizer if hasattr(optimizer, "optimizer") else optimizer
    state = [v for s in base.state.values() for v in s.values() if torch.is_tensor(v) and v.dim() > 0]
    own = {id(p) for p in module.parameters()}
    masters = [p for g in base.param_groups for p in g["params"] if id(p) not in own]
    return _bytes(state) + _bytes(masters)


class ShardStats(L.Callback):
    """Writes ``<dir>/rank<r>.json``: step times, local parameter/optimizer bytes, peak RSS."""

    def __init__(self, dir: str) -> None:
        self.dir = Path(dir)
        self.marks: list[float] = []

    def on_train_batch_end(self, trainer: L.Trainer, *args: object) -> None:
        self.marks.append(time.perf_counter())

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        stats = {
            "step_s": [b - a for a, b in zip(self.marks, self.marks[1:], strict=False)],
            "param_bytes": local_param_bytes(pl_module),
            "optimizer_bytes": local_optimizer_bytes(trainer.optimizers[0], pl_module),
            "peak_rss_bytes": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024,
        }
        self.dir.mkdir(parents=True, exist_ok=True)
        (self.dir / f"rank{trainer.global_rank}.json").write_text(json.dumps(stats))


def run_strategy(name: str, steps: int, work: Path) -> list[dict]:
    out = work / name
    args = [
        f"model.path={work / 'tiny'}",
        f"paths.data_dir={work / 'data'}",
        f"hydra.run.dir={out}",
        "trainer=ddp_sim",
        f"strategy={name}",
        "data.batch_size=2",
        "global_batch_size=4",
        f"trainer.max_steps={steps}",
        "trainer.limit_val_batches=0",
        "val_generation=none",
        "export.enabled=false",
        "callbacks.model_checkpoint.every_n_train_steps=100000",
        "extras.print_config=false",
        *(
            f"data.{split}.0.{key}={n}"
            for split in ("train", "val")
            for key, n in (("num_train", 48), ("num_val", 8))
        ),
        "+callbacks.shard_stats._target_=bench.sharded_train.ShardStats",
        f"+callbacks.shard_stats.dir={out}/stats",
    ]
    env = {**os.environ, "PYTHONPATH": str(ROOT), "DS_ACCELERATOR": "cpu"}
    proc = subprocess.run(
        [sys.executable, "train.py", *args], cwd=ROOT, env=env, capture_output=True, text=True, timeout=1800
    )
    if proc.returncode:
        raise SystemExit(f"strategy={name} failed:\n{proc.stdout[-2000:]}{proc.stderr[-2000:]}")
    return [json.loads(p.read_text()) for p in sorted((out / "stats").glob("rank*.json"))]


def table(results: dict[str, list[dict]], warmup: int) -> list[list[str]]:
    """Rows: strategy, median step s, x DDP, then per rank params / optimizer MiB and peak RSS MiB."""
    medians = {n: statistics.median(r[0]["step_s"][warmup:]) for n, r in results.items()}
    ddp = medians.get("ddp")
    rows = []
    for name, ranks in results.items():
        params, optim = (
            " / ".join(f"{r[key] / MiB:.2f}" for r in ranks) for key in ("param_bytes", "optimizer_bytes")
        )
        rss = " / ".join(f"{r['peak_rss_bytes'] / MiB:.0f}" for r in ranks)
        ratio = f"{medians[name] / ddp:.2f}x" if ddp else "-"
        rows.append([name, f"{medians[name] * 1000:.0f} ms", ratio, params, optim, rss])
    return rows


HEADER = [
    "strategy",
    "step time (median)",
    "vs DDP",
    "params MiB (rank 0 / 1)",
    "optimizer MiB",
    "peak RSS MiB",
]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--strategies", default="ddp,fsdp,deepspeed_zero2,deepspeed_zero3")
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--warmup", type=int, default=3, help="steps left out of the median")
    parser.add_argument("--markdown", action="store_true")
    args = parser.parse_args()
    from yivl.checkpoint.tiny import build_tiny_checkpoint

    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        build_tiny_checkpoint(work / "tiny", seed=0)
        results = {n: run_strategy(n, args.steps, work) for n in args.strategies.split(",")}
    rows = table(results, args.warmup)
    if args.markdown:
        print("| " + " | ".join(HEADER) + " |\n|" + "---|" * len(HEADER))
        print("\n".join("| " + " | ".join(r) + " |" for r in rows))
    else:
        widths = [max(len(c) for c in col) for col in zip(HEADER, *rows, strict=True)]
        for r in [HEADER, *rows]:
            print("  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)))


if __name__ == "__main__":
    main()
