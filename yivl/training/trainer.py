"""The Lightning Trainer of a run: hardware, strategy, loggers, callbacks and gradient accumulation."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import lightning as L
import torch
from hydra.errors import InstantiationException
from hydra.utils import instantiate
from lightning.pytorch.loggers import Logger

from yivl.errors import YivlError
from yivl.training.strategies import build_strategy

LOGGER_PACKAGES = {"wandb": "wandb", "tensorboard": "tensorboard"}


def resolve_hardware(trainer: Mapping) -> tuple[str, str]:
    """(accelerator, precision) with ``auto`` resolved: a CUDA GPU and bf16-mixed if one is there."""
    accelerator = str(trainer["accelerator"])
    if accelerator in ("auto", "cuda"):
        accelerator = "gpu" if accelerator == "cuda" or torch.cuda.is_available() else "cpu"
    precision = str(trainer["precision"])
    if precision == "auto":
        precision = "bf16-mixed" if accelerator == "gpu" else "32-true"
    return accelerator, precision


def build_loggers(loggers: Mapping | None) -> list[Logger]:
    """Instantiate each ``logger`` entry; a missing package gets one line saying what to install."""
    built = []
    for name, spec in (loggers or {}).items():
        if not isinstance(spec, Mapping) or "_target_" not in spec:
            continue
        try:
            built.append(instantiate(spec))
        except InstantiationException as err:
            if not isinstance(err.__cause__, ImportError):
                raise
            package = LOGGER_PACKAGES.get(name, name)
            raise YivlError(f"logger={name} needs the {package} package: pip install {package}") from err
    return built


def build_callbacks(callbacks: Mapping | None) -> list[L.Callback]:
    """Instantiate each ``callbacks`` entry that has a ``_target_``."""
    specs = (callbacks or {}).values()
    return [instantiate(spec) for spec in specs if isinstance(spec, Mapping) and "_target_" in spec]


def accumulation(global_batch: int, micro_batch: int, world_size: int) -> int:
    """Micro-batches per optimizer step so that ``micro_batch * world_size * steps == global_batch``."""
    per_step = micro_batch * world_size
    if global_batch % per_step:
        raise YivlError(
            f"global_batch_size={global_batch} is not a multiple of data.batch_size={micro_batch} x "
            f"{world_size} device(s) = {per_step}; change one of them"
        )
    return global_batch // per_step


def build_trainer(
    plain: Mapping, accelerator: str, precision: str, callbacks: Sequence[L.Callback] = ()
) -> L.Trainer:
    """The Trainer for the composed config (``plain``: resolved to plain containers), with the
    ``callbacks`` group's callbacks plus ``callbacks``."""
    micro_batch = int(plain["data"]["batch_size"])
    kwargs = {k: v for k, v in plain["trainer"].items() if k != "_target_"}
    kwargs.update(accelerator=accelerator, precision=precision)
    trainer = L.Trainer(
        **kwargs,
        strategy=build_strategy(plain["strategy"], micro_batch),
        logger=build_loggers(plain["logger"]) or False,
        callbacks=[*build_callbacks(plain["callbacks"]), *callbacks],
    )
    world = trainer.num_devices * trainer.num_nodes
    trainer.accumulate_grad_batches = accumulation(int(plain["global_batch_size"]), micro_batch, world)
    return trainer
