"""train.py's work: check the config, build data, module and trainer, fit, export.

Configuration flows one way: the composed Hydra config -> plain dicts -> objects. Everything a run needs
to know about the base model (size, resolution, tokenizer) is read from its config files before any
weight is loaded, so bad combinations fail in a second, not after loading 68 GB.
"""

from __future__ import annotations

import logging
import os
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import lightning as L
import torch
from omegaconf import DictConfig, OmegaConf

from yivl.checkpoint.layout import check_model_dir, read_config
from yivl.checkpoint.plan import RunPlan, resolve_image_size
from yivl.checkpoint.tiny import ensure_tiny_checkpoint
from yivl.errors import YivlError
from yivl.evaluation.val_generation import ValGeneration, ValidationGeneration, parse_val_generation
from yivl.models.attention import check_attn_implementation
from yivl.models.config import YiVLConfig
from yivl.training.checkpointing import check_same_run, peek_meta, run_meta
from yivl.training.checks import check_config, check_resume_kind
from yivl.training.data import ModelInputs, build_datamodule, model_inputs
from yivl.training.export import check_export_dir, export_checkpoint, export_trained
from yivl.training.interrupt import LastCheckpoint, hydra_resume_command
from yivl.training.launch import check_external_launch, hydra_run_dir_given, use_job_subprocess_command
from yivl.training.module import YiVLModule
from yivl.training.report import print_config, quiet_lightning_logging
from yivl.training.strategies import SHARDING, offloads_optimizer
from yivl.training.trainer import build_trainer, resolve_hardware

log = logging.getLogger("yivl.training")
RENDEZVOUS_VARIABLES = ("MASTER_ADDR", "MASTER_PORT", "WORLD_SIZE", "NODE_RANK", "LOCAL_RANK", "RANK")


@dataclass
class Trained:
    """What a run leaves: the trainer and module (for tests and notebooks) and the export folder."""

    trainer: L.Trainer
    module: YiVLModule
    export_dir: Path | None

    def metric(self, name: str) -> float | None:
        value = self.trainer.callback_metrics.get(name)
        return None if value is None else float(value)


def run(cfg: DictConfig) -> float | None:
    """train.py: train as ``cfg`` says; return ``cfg.optimized_metric`` (what sweepers optimize) or None."""
    with fresh_process_group():
        return train(cfg).metric(cfg.optimized_metric)


@contextmanager
def fresh_process_group() -> Iterator[None]:
    """Leave no process group or rendezvous variables behind for the next job of a multirun.

    Lightning initializes torch.distributed in the launching process and sets MASTER_PORT & co. there;
    the next job of a sweep (same process) would reuse that group, whose other ranks have exited.
    """
    saved = {key: os.environ.get(key) for key in RENDEZVOUS_VARIABLES}
    try:
        yield
    finally:
        if torch.distributed.is_available() and torch.distributed.is_initialized():
            torch.distributed.destroy_process_group()
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def train(cfg: DictConfig) -> Trained:
    """Check the config, build data, module and trainer, fit, export."""
    use_job_subprocess_command()
    quiet_lightning_logging()
    accelerator, precision = resolve_hardware(cfg.trainer)
    plain = OmegaConf.to_container(cfg, resolve=True, throw_on_missing=True)
    check_config(plain, accelerator, precision)
    check_external_launch(plain["trainer"], hydra_run_dir_given())
    val_task = parse_val_generation(plain["val_generation"])
    if cfg.extras.ignore_warnings:
        warnings.filterwarnings("ignore")
    if cfg.extras.print_config:
        print_config(cfg)
    L.seed_everything(cfg.seed, workers=True, verbose=False)

    base = base_model_dir(plain["model"])
    config, vit_dir = read_config(base)
    check_model_size(plain["model"]["name"], config, base)
    check_attn_implementation(plain["model"]["attn_implementation"])
    plan = module_plan(plain, base, config, precision)
    check_export_dir(plain["export"])
    inputs = model_inputs(base, vit_dir, config, plan.image_size)
    datamodule = build_datamodule(cfg.data, inputs)
    has_val = bool(datamodule.val_sources)
    last = LastCheckpoint(Path(plain["paths"]["output_dir"]) / "checkpoints", hydra_resume_command())
    callbacks = [*val_callbacks(val_task, inputs, base, has_val), last]
    trainer = build_trainer(plain, accelerator, precision, callbacks)
    ckpt_path = resolve_ckpt_path(plain, run_meta(plan, config), trainer.num_devices * trainer.num_nodes)
    module = YiVLModule(plan)
    try:
        trainer.fit(module, datamodule=datamodule, ckpt_path=ckpt_path, weights_only=True)
    except YivlError as err:
        raise unwrap_worker_error(err) from None
    return Trained(trainer, module, finish(trainer, module, inputs, plain))


def val_callbacks(
    task: ValGeneration | None, inputs: ModelInputs, base: Path, has_val_data: bool
) -> list[L.Callback]:
    """The validation generation task's callback, when ``val_generation`` names one."""
    if task is None:
        return []
    return [ValidationGeneration(task, inputs.tokenizer, inputs.image_processor, base, has_val_data)]


def unwrap_worker_error(err: YivlError) -> YivlError:
    """A YivlError raised in a DataLoader worker arrives as "Caught YivlError in DataLoader worker process
    0." with the original traceback below; give back the original one-line message."""
    text = str(err)
    if not text.startswith("Caught ") or "DataLoader worker" not in text.splitlines()[0]:
        return err
    last = [line for line in text.splitlines() if line.strip()][-1]
    return YivlError(last.split(": ", 1)[1] if ": " in last else last)


def base_model_dir(model: dict) -> Path:
    """The base model folder; the tiny model is built on first use, the others must exist."""
    path = Path(model["path"]).expanduser()
    if model["build_if_missing"]:
        ensure_tiny_checkpoint(path)
    elif not path.is_dir():
        raise YivlError(
            f"model={model['name']}: base model not found at {path}; download the release there "
            "(train.py never downloads) or set model.path=DIR"
        )
    return check_model_dir(path)


def check_model_size(name: str, config: YiVLConfig, path: Path) -> None:
    """The checkpoint must have the shape of the chosen model size (when that is a known preset)."""
    from yivl.models.presets import PRESETS, preset

    if name not in PRESETS:
        return
    want = preset(name)
    shape = ("hidden_size", "num_hidden_layers")
    have_shape = tuple(config.llm[k] for k in shape)
    want_shape = tuple(want.llm[k] for k in shape)
    if have_shape != want_shape:
        other = next(
            (n for n in PRESETS if tuple(preset(n).llm[k] for k in shape) == have_shape), "another size"
        )
        raise YivlError(
            f"model={name} expects an LLM of hidden size {want_shape[0]} and {want_shape[1]} layers, but "
            f"{path} has {have_shape[0]} and {have_shape[1]} ({other}); "
            f"pick model={other} or the right model.path"
        )


def module_plan(plain: dict, base: Path, config: YiVLConfig, precision: str) -> RunPlan:
    """The run plan from the composed config and the base model's config (its resolution, when
    ``module.image_size`` is null), before any weight is read."""
    module = plain["module"]
    return RunPlan.from_dict(
        {
            "model": {
                "name": plain["model"]["name"],
                "path": str(base),
                "attn_implementation": plain["model"]["attn_implementation"],
                "loss_chunk_size": plain["model"]["loss_chunk_size"],
            },
            "stage": module["stage"],
            "image_size": resolve_image_size(module["image_size"], config),
            "train": module["train"],
            "finetune": plain["finetune"],
            "optimizer": module["optimizer"],
            "scheduler": module["scheduler"],
            "gradient_checkpointing": module["gradient_checkpointing"],
            "precision": precision,
            "cpu_adam": offloads_optimizer(plain["strategy"]),
        }
    )


def resolve_ckpt_path(plain: dict, meta: dict, world_size: int) -> str | None:
    """``ckpt_path``: None, "last" (this run directory's last.ckpt) or a path; checked against this run."""
    raw = plain["ckpt_path"]
    if raw is None:
        return None
    if raw == "last":
        path = Path(plain["paths"]["output_dir"]) / "checkpoints" / "last.ckpt"
        if not path.exists():
            raise YivlError(
                f"ckpt_path=last: no {path}; resume in the earlier run's directory "
                "(hydra.run.dir=<that run>) or give ckpt_path=<file>"
            )
    else:
        path = Path(raw).expanduser()
        if not path.exists():
            raise YivlError(f"ckpt_path={raw} not found; give a .ckpt file from a run's checkpoints/ folder")
    check_resume_kind(path, plain["strategy"], world_size)
    try:
        saved = peek_meta(path)
    except YivlError:
        raise
    except Exception as err:  # unpickling errors come in many types
        raise YivlError(f"ckpt_path={path} cannot be read as a checkpoint ({type(err).__name__})") from None
    check_same_run(str(path), saved, meta)
    return str(path)


def finish(trainer: L.Trainer, module: YiVLModule, inputs: ModelInputs, plain: dict) -> Path | None:
    """Export the result (skipped for fast_dev_run and when export.enabled is false); its folder."""
    export = plain["export"]
    if not export["enabled"] or trainer.fast_dev_run or trainer.interrupted:
        return None
    sharded = plain["strategy"]["name"] in SHARDING
    if sharded:  # no single rank holds the parameters: export from a gathered checkpoint
        final = Path(plain["paths"]["output_dir"]) / "checkpoints" / "final.ckpt"
        trainer.save_checkpoint(final, weights_only=False)
    if not trainer.is_global_zero:
        return None
    with torch.no_grad():
        if sharded:
            out = export_checkpoint(final, export)
        else:
            out = export_trained(module.model, module.plan, inputs.tokenizer, inputs.image_processor, export)
    print(f"exported the trained model to {out}", flush=True)
    return out
