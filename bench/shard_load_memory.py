"""Per-rank peak RSS while loading a ~1B-parameter Yi-shaped model for FSDP2, 2 processes vs 1.

A random checkpoint with the Yi-VL-6B widths but fewer layers (LLM 2 of 32, ViT 8 of 32: about 1.0B
parameters; LLM bf16 and ViT fp32 on disk, as released) is written once. Then, in fresh processes:

- ``1 process``: ``build_model`` (what train.py does without sharding) in fp32, stage 3;
- ``fsdp x2``: two gloo processes run ``yivl.training.fsdp2.build_sharded``: rank 0 reads the
  checkpoint, the other rank builds on the meta device, and each keeps its half after the broadcast.

    python bench/shard_load_memory.py [--llm-layers 2] [--vision-layers 8] [--workdir DIR] [--markdown]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psutil
from load_memory import GiB, write_checkpoint
from rich.console import Console
from rich.table import Table

from yivl.models.presets import preset

ROOT = Path(__file__).resolve().parents[1]


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--llm-layers", type=int, default=2)
    parser.add_argument("--vision-layers", type=int, default=8)
    parser.add_argument("--workdir", type=Path, default=None, help="where to write (default: system temp)")
    parser.add_argument("--markdown", action="store_true", help="print a Markdown table instead")
    parser.add_argument("--child", type=Path, default=None, help=argparse.SUPPRESS)
    parser.add_argument("--sharded", action="store_true", help=argparse.SUPPRESS)
    return parser.parse_args(argv)


def stage3_plan(model_dir: Path):
    """The run plan of ``experiment=stage3`` on ``model_dir`` in fp32 (everything trains)."""
    from hydra import compose, initialize_config_dir
    from omegaconf import OmegaConf

    from yivl.checkpoint.layout import read_config
    from yivl.training.run import module_plan

    with initialize_config_dir(str(ROOT / "configs"), version_base="1.3"):
        cfg = compose(
            "train", overrides=["experiment=stage3", f"model.path={model_dir}", "paths.output_dir=."]
        )
    plain = OmegaConf.to_container(cfg, resolve=True)
    config, _ = read_config(model_dir)
    return module_plan(plain, model_dir, config, "32-true")


def child(model_dir: Path, sharded: bool) -> None:
    """Subprocess body: build the model (sharded or not), print this rank's figures as one JSON line."""
    import torch
    import torch.distributed as dist

    from yivl.training.build import Dtypes, build_model
    from yivl.training.fsdp2 import build_sharded, local_bytes

    plan = stage3_plan(model_dir)
    baseline = psutil.Process().memory_info().rss
    start = time.perf_counter()
    if sharded:
        dist.init_process_group("gloo")
        mesh = torch.distributed.device_mesh.init_device_mesh("cpu", (dist.get_world_size(),))
        model = build_sharded(plan, Dtypes.for_precision("32-true"), mesh, torch.device("cpu"))
    else:
        model = build_model(plan, Dtypes.for_precision("32-true"))
    seconds = time.perf_counter() - start
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # Linux reports KiB
    figures = {"seconds": seconds, "peak": peak, "baseline": baseline}
    figures |= {
        "held": local_bytes(list(model.parameters())),
        "params": sum(p.numel() for p in model.parameters()),
    }
    print(json.dumps(figures), flush=True)
    if sharded:
        dist.destroy_process_group()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def measure(model_dir: Path, world: int) -> list[dict]:
    """Figures of each of ``world`` fresh processes (world 1: unsharded)."""
    cmd = [sys.executable, str(Path(__file__).resolve()), "--child", str(model_dir)]
    env = {
        **os.environ,
        "MASTER_ADDR": "127.0.0.1",
        "MASTER_PORT": str(free_port()),
        "WORLD_SIZE": str(world),
    }
    procs = [
        subprocess.Popen(
            cmd + (["--sharded"] if world > 1 else []),
            env={**env, "RANK": str(rank), "LOCAL_RANK": str(rank)},
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for rank in range(world)
    ]
    out = [p.communicate(timeout=3600) for p in procs]
    for p, (_, err) in zip(procs, out, strict=True):
        if p.returncode != 0:
            sys.exit(f"a load subprocess failed (exit {p.returncode}):\n{err[-4000:]}")
    return [json.loads(stdout.strip().splitlines()[-1]) for stdout, _ in out]


def report(rows: list[tuple[str, int, dict]], markdown: bool) -> None:
    header = ["run", "rank", "parameters", "held param GiB", "RSS before GiB", "peak RSS GiB", "load s"]
    lines = [
        [
            run,
            str(rank),
            f"{f['params'] / 1e9:.2f} B",
            f"{f['held'] / GiB:.2f}",
            f"{f['baseline'] / GiB:.2f}",
            f"{f['peak'] / GiB:.2f}",
            f"{f['seconds']:.1f}",
        ]
        for run, rank, f in rows
    ]
    if markdown:
        print("| " + " | ".join(header) + " |\n|" + "---|" * len(header))
        print("\n".join("| " + " | ".join(line) + " |" for line in lines))
        return
    table = Table(*header, title="Load memory per rank (fp32, stage 3)")
    for line in lines:
        table.add_row(*line)
    Console().print(table)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    if args.child is not None:
        child(args.child, args.sharded)
        return
    work = Path(tempfile.mkdtemp(dir=args.workdir))
    try:
        config = preset("yi_vl_6b")
        config.llm["num_hidden_layers"] = args.llm_layers
        config.vision["num_hidden_layers"] = args.vision_layers
        write_checkpoint(config, work / "model", "safetensors", 10 * 10**9)
        rows = [("1 process", 0, measure(work / "model", 1)[0])]
        rows += [("fsdp x2", rank, f) for rank, f in enumerate(measure(work / "model", 2))]
        report(rows, args.markdown)
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
