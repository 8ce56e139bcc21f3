"""Per-rank peak RSS while loading a ~1B-parameter Yi-shaped model for FSDP2 and ZeRO-3, 2 processes vs 1.

A random checkpoint with the Yi-VL-6B widths but fewer layers (LLM 2 of 32, ViT 8 of 32: about 1.0B
parameters; LLM bf16 and ViT fp32 on disk, as released) is written once. Then, in fresh processes:

- ``1 process``: ``build_model`` (what train.py does without sharding) in fp32, stage 3;
- ``fsdp x2``: two gloo processes run ``yivl.training.fsdp2.build_sharded``: rank 0 reads the
  checkpoint, the other rank builds on the meta device, and each keeps its half after the broadcast;
- ``zero3 x2``: two gloo processes (DeepSpeed's CPU accelerator) run
  ``yivl.training.zero3_init.build_partitioned`` with the ``strategy=deepspeed_zero3`` config: rank 0
  reads the checkpoint, the other rank builds on the meta device, ``deepspeed.zero.Init`` partitions
  one parameter at a time.

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
ENGINES = ("fsdp", "zero3")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--llm-layers", type=int, default=2)
    parser.add_argument("--vision-layers", type=int, default=8)
    parser.add_argument("--workdir", type=Path, default=None, help="where to write (default: system temp)")
    parser.add_argument("--markdown", action="store_true", help="print a Markdown table instead")
    parser.add_argument("--child", type=Path, default=None, help=argparse.SUPPRESS)
    parser.add_argument("--engine", choices=ENGINES, default=None, help=argparse.SUPPRESS)
    return parser.parse_args(argv)


def stage3_plan(model_dir: Path):
    """(run plan, DeepSpeed config) of ``experiment=stage3 strategy=deepspeed_zero3`` in fp32."""
    from hydra import compose, initialize_config_dir
    from omegaconf import OmegaConf

    from yivl.checkpoint.layout import read_config
    from yivl.training.run import module_plan
    from yivl.training.strategies import deepspeed_config

    overrides = ["experiment=stage3", "strategy=deepspeed_zero3", f"model.path={model_dir}"]
    with initialize_config_dir(str(ROOT / "configs"), version_base="1.3"):
        cfg = compose("train", overrides=[*overrides, "paths.output_dir=."])
    plain = OmegaConf.to_container(cfg, resolve=True)
    config, _ = read_config(model_dir)
    return module_plan(plain, model_dir, config, "32-true"), deepspeed_config(plain["strategy"], 1)


def load(model_dir: Path, engine: str | None):
    """Build the stage-3 model: whole (``engine`` None), FSDP2-sharded or ZeRO-3-partitioned."""
    import torch
    import torch.distributed as dist

    from yivl.training.build import Dtypes, build_model

    plan, ds_config = stage3_plan(model_dir)
    dtypes = Dtypes.for_precision("32-true")
    if engine is None:
        return build_model(plan, dtypes)
    if engine == "fsdp":
        from yivl.training.fsdp2 import build_sharded

        dist.init_process_group("gloo")
        mesh = torch.distributed.device_mesh.init_device_mesh("cpu", (dist.get_world_size(),))
        return build_sharded(plan, dtypes, mesh, torch.device("cpu"))
    import deepspeed

    from yivl.training.zero3_init import build_partitioned

    deepspeed.init_distributed("gloo")
    return build_partitioned(plan, dtypes, ds_config, lambda model: model)


def held_bytes(model) -> int:
    """Parameter bytes this rank holds: a DTensor's local shard, a ZeRO-3 parameter's partition."""
    from yivl.training.fsdp2 import local_bytes

    return local_bytes([p.ds_tensor if hasattr(p, "ds_tensor") else p for p in model.parameters()])


def child(model_dir: Path, engine: str | None) -> None:
    """Subprocess body: build the model (sharded or not), print this rank's figures as one JSON line."""
    import torch.distributed as dist

    baseline = psutil.Process().memory_info().rss
    start = time.perf_counter()
    model = load(model_dir, engine)
    seconds = time.perf_counter() - start
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # Linux reports KiB
    figures = {"seconds": seconds, "peak": peak, "baseline": baseline}
    params = sum(p.ds_numel if hasattr(p, "ds_numel") else p.numel() for p in model.parameters())
    figures |= {"held": held_bytes(model), "params": params}
    print(json.dumps(figures), flush=True)
    if engine is not None:
        dist.destroy_process_group()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def measure(model_dir: Path, world: int, engine: str | None = None) -> list[dict]:
    """Figures of each of ``world`` fresh processes (``engine`` None: one unsharded process)."""
    cmd = [sys.executable, str(Path(__file__).resolve()), "--child", str(model_dir)]
    env = {
        **os.environ,
        "MASTER_ADDR": "127.0.0.1",
        "MASTER_PORT": str(free_port()),
        "WORLD_SIZE": str(world),
        "DS_ACCELERATOR": "cpu",
    }
    procs = [
        subprocess.Popen(
            cmd + (["--engine", engine] if engine else []),
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
        child(args.child, args.engine)
        return
    work = Path(tempfile.mkdtemp(dir=args.workdir))
    try:
        config = preset("yi_vl_6b")
        config.llm["num_hidden_layers"] = args.llm_layers
        config.vision["num_hidden_layers"] = args.vision_layers
        write_checkpoint(config, work / "model", "safetensors", 10 * 10**9)
        rows = [("1 process", 0, measure(work / "model", 1)[0])]
        for engine in ENGINES:
            rows += [(f"{engine} x2", rank, f) for rank, f in enumerate(measure(work / "model", 2, engine))]
        report(rows, args.markdown)
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
