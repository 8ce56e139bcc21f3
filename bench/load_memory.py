"""Peak resident memory of loading a published-layout Yi-VL checkpoint, against the size of its weights.

Writes a random checkpoint with a preset's shapes (bf16 LLM + projector sharded like the 01-ai release,
fp32 ViT in ``vit/<name>/``), generating and writing one tensor at a time; drops the files from the page
cache; then loads it with ``yivl.checkpoint.load_pretrained`` in a fresh subprocess and reports load
time and peak RSS. Target: peak RSS <= 1.2x the checkpoint's weight bytes.

    python bench/load_memory.py [--preset yi_vl_6b] [--format safetensors|bin] [--workdir DIR] [--keep]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psutil
import torch
from rich.console import Console
from rich.table import Table

from yivl.checkpoint.save import published_state, write_configs
from yivl.checkpoint.tiny_tokenizer import train_tiny_tokenizer
from yivl.checkpoint.writer import TensorSpec, nbytes, write_weights
from yivl.data.images import ImageProcessor
from yivl.models.config import YiVLConfig
from yivl.models.empty_init import empty_init
from yivl.models.presets import PRESETS, preset
from yivl.models.yivl import YiVL

GiB = 2**30
LLM_DTYPE, VIT_DTYPE = torch.bfloat16, torch.float32  # as in the release


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", default="yi_vl_6b", choices=sorted(PRESETS))
    parser.add_argument("--format", default="safetensors", choices=("safetensors", "bin"))
    parser.add_argument("--workdir", type=Path, default=None, help="where to write (default: system temp)")
    parser.add_argument("--keep", action="store_true", help="keep the generated checkpoint")
    parser.add_argument("--max-shard-gb", type=float, default=10.0, help="shard size (release: ~10 GB)")
    parser.add_argument("--markdown", action="store_true", help="print a Markdown table instead")
    parser.add_argument("--child", type=Path, default=None, help=argparse.SUPPRESS)
    return parser.parse_args(argv)


def checkpoint_specs(config: YiVLConfig) -> tuple[list[TensorSpec], list[TensorSpec]]:
    """Published keys, shapes and release dtypes of the main shards and of the ViT (no memory used)."""
    with empty_init():
        model = YiVL(config)
    state = published_state(model)
    main = [(key, tuple(t.shape), LLM_DTYPE) for key, t in state["main"].items()]
    vit = [(key, tuple(t.shape), VIT_DTYPE) for key, t in state["vit"].items()]
    return main, vit


def random_tensor(specs: list[TensorSpec]):
    """``make(key)`` for ``write_weights``: a fresh random tensor per key, seeded by its position."""
    by_key = {spec[0]: (i, spec) for i, spec in enumerate(specs)}

    def make(key: str) -> torch.Tensor:
        i, (_, shape, dtype) = by_key[key]
        generator = torch.Generator().manual_seed(i)
        return torch.empty(shape, dtype=dtype).normal_(0.0, 0.02, generator=generator)

    return make


def write_checkpoint(config: YiVLConfig, out: Path, fmt: str, max_shard_bytes: int) -> int:
    """Write a random checkpoint in the published layout; return its weight bytes."""
    main, vit = checkpoint_specs(config)
    vit_dir = write_configs(config, out, LLM_DTYPE, VIT_DTYPE)
    write_weights(main, random_tensor(main), out, fmt, max_shard_bytes)
    write_weights(vit, random_tensor(vit), vit_dir, fmt, 2**62)
    ImageProcessor(size=config.image_size).save_pretrained(vit_dir)
    train_tiny_tokenizer(out)  # the loader needs a tokenizer; its vocabulary size does not matter here
    return sum(map(nbytes, main)) + sum(map(nbytes, vit))


def drop_page_cache(folder: Path) -> None:
    """Evict the checkpoint's files from the page cache so the load reads from disk (cold)."""
    for path in folder.rglob("*"):
        if path.is_file():
            fd = os.open(path, os.O_RDONLY)
            try:
                os.fsync(fd)
                os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
            finally:
                os.close(fd)


def child(model_dir: Path) -> None:
    """Subprocess body: load the checkpoint and print its figures as one JSON line."""
    from yivl.checkpoint.load import load_pretrained  # imported before measuring the baseline

    baseline = psutil.Process().memory_info().rss
    start = time.perf_counter()
    loaded = load_pretrained(model_dir)
    seconds = time.perf_counter() - start
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # Linux reports KiB
    model_bytes = sum(p.nbytes for p in loaded.model.parameters())
    dtype = str(next(loaded.model.parameters()).dtype).removeprefix("torch.")
    print(
        json.dumps(
            {"seconds": seconds, "peak": peak, "baseline": baseline, "model": model_bytes, "dtype": dtype}
        )
    )


def measure(model_dir: Path) -> dict:
    """Run ``child`` in a fresh interpreter and return its figures."""
    cmd = [sys.executable, str(Path(__file__).resolve()), "--child", str(model_dir)]
    done = subprocess.run(cmd, capture_output=True, text=True)
    if done.returncode != 0:
        sys.exit(f"the load subprocess failed (exit {done.returncode}):\n{done.stderr[-4000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def report(args: argparse.Namespace, weights: int, write_s: float, figures: dict) -> None:
    """Print the figures as a rich table (or Markdown)."""
    ratio = figures["peak"] / weights
    growth = (figures["peak"] - figures["baseline"]) / figures["model"]
    rows = [
        ("preset / format", f"{args.preset} / {args.format} ({args.max_shard_gb:g} GB shards)"),
        ("checkpoint weight bytes", f"{weights / GiB:.2f} GiB (LLM bf16 + ViT fp32)"),
        ("loaded model bytes", f"{figures['model'] / GiB:.2f} GiB ({figures['dtype']})"),
        ("write time", f"{write_s:.1f} s"),
        ("load time (cold page cache)", f"{figures['seconds']:.1f} s"),
        ("RSS before load (imports)", f"{figures['baseline'] / GiB:.2f} GiB"),
        ("peak RSS", f"{figures['peak'] / GiB:.2f} GiB"),
        ("peak RSS / weight bytes", f"{ratio:.3f}x (target <= 1.2x: {'met' if ratio <= 1.2 else 'MISSED'})"),
        ("peak RSS / loaded model bytes", f"{figures['peak'] / figures['model']:.3f}x"),
        ("(peak - before) / loaded model bytes", f"{growth:.3f}x"),
        ("machine", f"{os.cpu_count()} CPUs, {psutil.virtual_memory().total / GiB:.0f} GiB RAM"),
    ]
    if args.markdown:
        print("| measure | value |\n|---|---|")
        print("\n".join(f"| {k} | {v} |" for k, v in rows))
        return
    table = Table(title="load_pretrained peak memory")
    table.add_column("measure")
    table.add_column("value")
    for row in rows:
        table.add_row(*row)
    Console().print(table)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    if args.child:
        child(args.child)
        return
    config = preset(args.preset)
    if args.workdir:
        args.workdir.mkdir(parents=True, exist_ok=True)
    out = Path(tempfile.mkdtemp(prefix=f"yivl-bench-{args.preset}-", dir=args.workdir))
    try:
        start = time.perf_counter()
        weights = write_checkpoint(config, out, args.format, int(args.max_shard_gb * 1e9))
        write_s = time.perf_counter() - start
        drop_page_cache(out)
        report(args, weights, write_s, measure(out))
    finally:
        if args.keep:
            print(f"kept the checkpoint in {out}")
        else:
            shutil.rmtree(out, ignore_errors=True)


if __name__ == "__main__":
    main()
