"""``evaluate.py``: read the tasks, load the checkpoint, run, and write samples, summary, table and chart.

Order matters for the user: every task file is read and checked before the model is loaded, and the
output folder is checked (or accepted for a resume) before any sample is computed.
"""

from __future__ import annotations

import os
import random
import shutil
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from omegaconf import DictConfig, OmegaConf

from yivl.config.schemas import validate
from yivl.data.records import DEFAULT_MAX_RECORD_BYTES
from yivl.errors import YivlError
from yivl.evaluation.benchmarks import BENCHMARK_OPTIONS
from yivl.evaluation.checkpoints import describe_checkpoint, load_checkpoint
from yivl.evaluation.items import Item
from yivl.evaluation.ranks import (
    Heartbeat,
    SharedError,
    World,
    on_main,
    process_group,
    rank_device,
    ranks_dir,
    same_on_every_rank,
    stop_on_sigterm,
    sync,
    wait_for,
    world_from_env,
)
from yivl.evaluation.records import SampleWriter, prepare_output_dir, samples_path
from yivl.evaluation.registry import build_items, get_type
from yivl.evaluation.runner import RunOptions, TaskOutcome, TaskRunner
from yivl.evaluation.scoring import chance_levels, scored_records, skip_counts, summarize
from yivl.evaluation.shares import (
    add_rank_stats,
    load_done,
    merge,
    partial_path,
    partial_paths,
    pending_ranks,
    read_markers,
    write_marker,
)
from yivl.evaluation.sources import (
    DEFAULT_IMAGE_FILES,
    ImageFiles,
    RawRecord,
    dataset_fingerprint,
    read_task_file,
)
from yivl.evaluation.summary import TaskResult, write_outputs
from yivl.evaluation.table_records import read_table
from yivl.evaluation.tabular import is_table
from yivl.evaluation.tasks import TaskSpec, parse_tasks

OFFLINE_ENV = ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE", "TRANSFORMERS_OFFLINE")


@dataclass
class LoadedTask:
    """A task's spec, its checked items and the fingerprint of its records."""

    spec: TaskSpec
    items: list[Item]
    fingerprint: str
    benchmark: str | None = None  # the layout a benchmark table was read as


def run(cfg: DictConfig) -> dict[str, Any]:
    """Evaluate ``cfg.model.path`` on ``cfg.tasks``; returns the summary written to summary.json.

    Under torchrun (``WORLD_SIZE`` > 1) each rank runs its share of every task and rank 0 merges
    and summarises (the other ranks return an empty dict); ``devices=N`` starts N such ranks itself.
    """
    for name in OFFLINE_ENV:  # nothing below may reach the network, whatever the environment says
        os.environ[name] = "1"
    started = time.perf_counter()
    validate(cfg, "eval")  # old spellings (checkpoint=, base_model=) moved, every typed key checked
    world = world_from_env()
    if int(cfg.devices) > 1:
        if world.distributed:
            raise YivlError(
                f"devices={cfg.devices} under a launcher (WORLD_SIZE={world.size}); use one or the other"
            )
        from yivl.evaluation.spawn import run_spawned

        return run_spawned(cfg, run)
    try:
        return _run_ranks(cfg, world, started)
    except SharedError:  # rank 0's error: rank 0 reports it (and its launcher sees it fail)
        return {}


def _run_ranks(cfg: DictConfig, world: World, started: float) -> dict[str, Any]:
    with process_group(world, float(cfg.rank_timeout_s)) as world:
        on_main(world, lambda: _ensure_synthetic(cfg))  # files written by one rank only
        tasks = load_tasks(cfg)
        checkpoint = on_main(world, lambda: _checkpoint_path(cfg))
        info = describe_checkpoint(checkpoint, cfg.model.base, cfg.fingerprint == "full")
        device, dtype = _device_dtype(cfg)
        settings = run_settings(cfg, tasks, str(device), str(dtype).removeprefix("torch."))
        manifest = {"settings": settings, "checkpoint": info.describe(), "datasets": _datasets(tasks)}
        out_dir = Path(cfg.output_dir).expanduser()
        same_on_every_rank(world, "output_dir", str(out_dir.resolve()))
        resuming = on_main(world, lambda: prepare_output_dir(out_dir, manifest, bool(cfg.resume)))
        heartbeat = Heartbeat(out_dir, world) if world.distributed else None
        sync(world)  # every heartbeat file is this start's before anyone looks at them
    if world.distributed:
        stop_on_sigterm(out_dir, world)
    _seed_everything(int(cfg.seed))
    local = torch.device(rank_device(str(device), world, torch.cuda.device_count()))
    if local.type == "cuda":
        torch.cuda.set_device(local)
    _set_threads(cfg.threads, local, int(cfg.num_workers), world.local_size)
    runner = TaskRunner(load_checkpoint(info, local, dtype), _run_options(cfg))
    results = [_run_task(runner, task, out_dir, resuming, cfg, world) for task in tasks]
    if heartbeat is not None:
        heartbeat.stop()
    if not world.main:
        return {}
    shutil.rmtree(ranks_dir(out_dir), ignore_errors=True)
    timing = {"wall_s": time.perf_counter() - started, "processes": world.size}
    return write_outputs(out_dir, manifest, [r for r in results if r], timing, resuming, bool(cfg.chart))


def _ensure_synthetic(cfg: DictConfig) -> None:
    """The ``eval=synthetic`` preset generates the synthetic dataset (as training would) when missing."""
    synthetic = cfg.get("synthetic")
    if not synthetic:
        return
    from yivl.data.synthetic import ensure_synthetic_dataset

    ensure_synthetic_dataset(synthetic.root, synthetic.num_train, synthetic.num_val, synthetic.seed)


def load_tasks(cfg: DictConfig) -> list[LoadedTask]:
    """Read and check every task file (before the model is loaded, so bad input fails fast)."""
    options = OmegaConf.to_container(cfg.task_options, resolve=True)
    entries = OmegaConf.to_container(cfg.tasks, resolve=True) if OmegaConf.is_config(cfg.tasks) else cfg.tasks
    images = ImageFiles(None, bool(cfg.allow_images_outside_folder), int(cfg.max_image_bytes))
    specs = parse_tasks(entries, options)
    limit = cfg.limit
    return [load_task(s, s.options.get("limit") or limit, images, cfg.max_record_bytes) for s in specs]


def load_task(
    spec: TaskSpec,
    limit: int | None,
    images: ImageFiles = DEFAULT_IMAGE_FILES,
    max_record_bytes: int = DEFAULT_MAX_RECORD_BYTES,
) -> LoadedTask:
    """Read one task file (its first ``limit`` records) and check every record for the task."""
    records, benchmark = _read_records(spec, limit, images, max_record_bytes)
    for record in records:
        _check_record_type(spec, record.data.get("task_type"), record.where)
    items = build_items(spec.type, records, spec.options)
    return LoadedTask(spec, items, dataset_fingerprint(records), benchmark)


def _read_records(
    spec: TaskSpec, limit: int | None, images: ImageFiles, max_record_bytes: int
) -> tuple[list[RawRecord], str | None]:
    """A benchmark table (TSV, Parquet) or the project's own files (JSONL, JSON, shards)."""
    folder, extra = spec.options.get("image_folder"), spec.options.get("images")
    if not is_table(spec.path):
        if extra is not None:
            raise YivlError(f"task {spec.name}: images= is for GQA's images Parquet, not {spec.path.name}")
        if folder is not None:
            images = ImageFiles(Path(str(folder)).expanduser(), images.allow_outside, images.max_bytes)
        return read_task_file(spec.path, limit, images, max_record_bytes), None
    if folder is not None:
        raise YivlError(
            f"task {spec.name}: image_folder is for JSON/JSONL tasks; {spec.path.name} holds its images"
        )
    extra_path = Path(str(extra)).expanduser() if extra is not None else None
    layout, records = read_table(
        spec.path, spec.type, spec.benchmark, [spec.name], limit, images.max_bytes, extra_path
    )
    for key, value in BENCHMARK_OPTIONS.get(layout.benchmark, {}).items():
        if key not in spec.explicit:  # a benchmark found from the columns implies its options too
            spec.options[key] = value
    return records, layout.benchmark


def _check_record_type(spec: TaskSpec, declared: Any, where: str) -> None:
    """A record's own ``task_type`` (when given) must suit the task: its type or one the task's type
    ``reads`` (yes/no files serve POPE and MME)."""
    if declared is None:
        return
    kind = get_type(str(declared), where).name
    if kind != spec.type and kind not in spec.kind.reads:
        raise YivlError(
            f"{where}: the record's task_type is {declared!r} but task {spec.name} is {spec.type}"
        )


def _checkpoint_path(cfg: DictConfig) -> Path:
    """``cfg.model.path``; the default tiny random model is built on first use."""
    path = Path(str(cfg.model.path)).expanduser()
    if path.resolve() == Path(cfg.paths.tiny_model).resolve():
        from yivl.checkpoint.tiny import ensure_tiny_checkpoint

        ensure_tiny_checkpoint(path)
    return path


def _device_dtype(cfg: DictConfig) -> tuple[torch.device, torch.dtype]:
    from yivl.models.device import pick_device, pick_dtype

    device = pick_device(str(cfg.device))
    return device, pick_dtype(str(cfg.dtype), device)


def run_settings(cfg: DictConfig, tasks: list[LoadedTask], device: str, dtype: str) -> dict[str, Any]:
    """Every setting that can change a result (what a resume must match); runtime-only keys left out."""
    return {
        "batch_size": cfg.batch_size,
        "limit": cfg.limit,
        "seed": cfg.seed,
        "device": device,
        "dtype": dtype,
        "max_image_pixels": cfg.max_image_pixels,
        "max_image_bytes": cfg.max_image_bytes,
        "batch_check": cfg.batch_check,
        "bootstrap_iters": cfg.bootstrap_iters,
        "base_model": cfg.model.base,
        "tasks": [
            {
                "name": t.spec.name,
                "type": t.spec.type,
                "benchmark": t.benchmark,
                "path": str(t.spec.path.resolve()),
                **t.spec.options,
            }
            for t in tasks
        ],
    }


def _datasets(tasks: list[LoadedTask]) -> dict[str, dict[str, Any]]:
    return {t.spec.name: {"fingerprint": t.fingerprint, "n_records": len(t.items)} for t in tasks}


def _set_threads(threads: Any, device: torch.device, workers: int, processes: int = 1) -> None:
    """``auto``: on CPU leave one core per DataLoader worker (spinning torch threads that share a core
    with a worker slow generation down many times), the cores split between the ``processes`` of
    this machine; on CUDA keep torch's default."""
    if threads is None or (threads == "auto" and device.type != "cpu"):
        return
    if threads == "auto":
        threads = max(1, (os.cpu_count() or 1) // processes - workers)
    if not isinstance(threads, int) or threads < 1:
        raise YivlError(f"threads={threads!r} must be auto, null or a positive integer")
    torch.set_num_threads(threads)


def _seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def _run_options(cfg: DictConfig) -> RunOptions:
    return RunOptions(
        batch_size=int(cfg.batch_size),
        num_workers=int(cfg.num_workers),
        max_image_pixels=int(cfg.max_image_pixels),
        seed=int(cfg.seed),
        batch_check=int(cfg.batch_check),
    )


def _run_task(
    runner: TaskRunner, task: LoadedTask, out_dir: Path, resuming: bool, cfg: DictConfig, world: World
) -> TaskResult | None:
    """Run this rank's share of one task (continuing what earlier runs wrote when resuming); rank 0
    merges the ranks' records and summarises them (None on the other ranks)."""
    name = task.spec.name
    own = partial_path(out_dir, name, world.rank) if world.distributed else samples_path(out_dir, name)
    shared = world.distributed or bool(partial_paths(out_dir, name))  # or a resume of such a run
    done = load_done(out_dir, name, own) if resuming else {}
    with SampleWriter(own) as writer, _progress(task, bool(cfg.progress) and world.main, world) as advance:
        outcome = runner.run(task.spec, task.items, done, writer, advance, share=world.share)
    if world.distributed:
        write_marker(out_dir, name, world, outcome)
        if not world.main:
            return None
        wait_for(out_dir, world, name, lambda: pending_ranks(out_dir, name, world), float(cfg.rank_timeout_s))
        add_rank_stats(outcome, read_markers(out_dir, name, world))
    if shared:
        outcome.records = merge(out_dir, name, task.items, outcome.order)
        if world.distributed:
            outcome.batch_check = runner.check_batches(task.spec, task.items, outcome.records)
    return _task_result(task, outcome, cfg)


def _task_result(task: LoadedTask, outcome: TaskOutcome, cfg: DictConfig) -> TaskResult:
    """The task's metrics over its scored records."""
    scored, skipped = scored_records(outcome.records), skip_counts(outcome.records)
    if not scored:  # every sample was skipped: no metric rather than one over zero samples
        return TaskResult(task.spec, outcome, None, {}, task.fingerprint, skipped)
    metrics = summarize(task.spec, scored, int(cfg.bootstrap_iters), int(cfg.seed))
    chance = chance_levels(task.spec, scored)
    return TaskResult(task.spec, outcome, metrics, chance, task.fingerprint, skipped)


@contextmanager
def _progress(task: LoadedTask, enabled: bool, world: World) -> Iterator[Callable[[int], None] | None]:
    """A progress bar's ``advance(n)`` for the task, or None when progress display is off. With N
    ranks rank 0 shows its own count (its share's size is not known up front)."""
    if not enabled:
        yield None
        return
    from yivl.progress import progress_bar

    where = f", rank 0 of {world.size}" if world.distributed else ""
    total = None if world.distributed else len(task.items)
    with progress_bar(f"{task.spec.name} ({task.spec.type}{where})", total) as bar:
        yield bar.advance
