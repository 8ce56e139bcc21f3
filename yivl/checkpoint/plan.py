"""The run plan: what a training run builds and how it trains, as one typed, frozen value.

train.py makes it from the composed config (``yivl.training.run.module_plan``) after reading the base
model's config and before any weight; the LightningModule takes it and stores :meth:`RunPlan.to_dict`
as its checkpoint hyperparameters (plain data, loadable with ``weights_only=True``); export and
evaluation read it back with :meth:`RunPlan.from_dict`. The image size is resolved when the plan is
made (:func:`resolve_image_size`: null means the base model's), so every consumer reads an int.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from yivl.checkpoint.layout import check_model_dir, read_config
from yivl.errors import YivlError
from yivl.models.config import YiVLConfig
from yivl.models.resolution import check_image_size

T = TypeVar("T")


@dataclass(frozen=True)
class ModelRef:
    """The base model: its preset name (``tiny``, ``yi_vl_6b``, ...) and its folder; the attention
    backend of the tower and the LLM (``yivl.models.attention``); the chunk of supervised positions the
    training loss takes at a time (``yivl.models.loss``; 0: all at once). The defaults are what
    checkpoints written before these keys existed trained with."""

    name: str
    path: str
    attn_implementation: str = "sdpa"
    loss_chunk_size: int = 0


@dataclass(frozen=True)
class TrainParts:
    """What trains: the tower and projector (on/off) and the LLM (``full``, ``lora`` or ``frozen``)."""

    vision_tower: bool
    projector: bool
    llm: str


@dataclass(frozen=True)
class LoraSettings:
    """LoRA rank, scale numerator and dropout (``finetune.lora``)."""

    r: int
    alpha: int
    dropout: float


@dataclass(frozen=True)
class QuantSettings:
    """QLoRA's 4-bit storage (``finetune.quant``): nf4/fp4, double quantization, packed storage dtype."""

    type: str
    double_quant: bool
    storage_dtype: str


@dataclass(frozen=True)
class Finetune:
    """``full``, ``lora`` or ``qlora``, with the LoRA and quantization settings the method has."""

    method: str
    lora: LoraSettings | None = None
    quant: QuantSettings | None = None


@dataclass(frozen=True)
class OptimizerSettings:
    """AdamW: one learning rate per part, weight decay (never on norms and biases), betas, eps."""

    lr: float
    vision_tower_lr: float
    projector_lr: float
    weight_decay: float
    betas: tuple[float, float]
    eps: float

    def lr_for(self, part: str) -> float:
        """The learning rate of ``part``: ``llm``, ``vision_tower`` or ``mm_projector``."""
        return float(
            {"llm": self.lr, "vision_tower": self.vision_tower_lr, "mm_projector": self.projector_lr}[part]
        )


@dataclass(frozen=True)
class ScheduleSettings:
    """Linear warmup over ``warmup_ratio`` of the steps, then cosine down to ``lr * min_lr_ratio``."""

    warmup_ratio: float
    min_lr_ratio: float


@dataclass(frozen=True)
class CheckpointFlags:
    """Activation checkpointing per part."""

    llm: bool
    vision_tower: bool


@dataclass(frozen=True)
class RunPlan:
    """Everything a run builds and trains; ``image_size`` is the tower's input side in px, resolved."""

    model: ModelRef
    stage: str
    image_size: int
    train: TrainParts
    finetune: Finetune
    optimizer: OptimizerSettings
    scheduler: ScheduleSettings
    gradient_checkpointing: CheckpointFlags
    precision: str
    cpu_adam: bool

    @property
    def has_adapters(self) -> bool:
        """True when the LLM trains LoRA adapters (LoRA and QLoRA runs)."""
        return self.train.llm == "lora"

    def lora_block(self) -> dict[str, Any]:
        """``finetune.lora`` as plain data (what ``yivl.models.lora`` takes); YivlError when absent."""
        if self.finetune.lora is None:
            raise YivlError(f"run plan: train.llm=lora but finetune={self.finetune.method} has no lora block")
        return dataclasses.asdict(self.finetune.lora)

    def on_base(self, path: str | Path) -> RunPlan:
        """The same plan over the base model folder ``path`` (``--model-base``)."""
        return dataclasses.replace(self, model=dataclasses.replace(self.model, path=str(path)))

    def to_dict(self) -> dict[str, Any]:
        """Plain data (dicts, lists, str, numbers, bools): the checkpoint's ``hyper_parameters``."""
        data = dataclasses.asdict(self)
        data["finetune"] = {k: v for k, v in data["finetune"].items() if v is not None}
        data["optimizer"]["betas"] = list(self.optimizer.betas)
        return data

    @classmethod
    def from_dict(cls, data: Mapping, base: str | Path | None = None) -> RunPlan:
        """The plan of :meth:`to_dict`, or of a checkpoint's hyperparameters as train.py has written them.

        ``base`` replaces the recorded base model folder. A null ``image_size`` (checkpoints written
        before the size was resolved up front) means the base model's: its config.json is read.
        """
        top = _fields_of(cls, data, "")
        model = _build(ModelRef, top["model"], "model.")
        if base is not None:
            model = dataclasses.replace(model, path=str(base))
        finetune = _fields_of(Finetune, top["finetune"], "finetune.")
        optimizer = _fields_of(OptimizerSettings, top["optimizer"], "optimizer.")
        size = top["image_size"]
        if size is None:
            size = resolve_image_size(None, read_config(check_model_dir(model.path))[0])
        return cls(
            model=model,
            stage=str(top["stage"]),
            image_size=int(size),
            train=_build(TrainParts, top["train"], "train."),
            finetune=Finetune(
                method=str(finetune["method"]),
                lora=_optional(LoraSettings, finetune.get("lora"), "finetune.lora."),
                quant=_optional(QuantSettings, finetune.get("quant"), "finetune.quant."),
            ),
            optimizer=OptimizerSettings(**{**optimizer, "betas": tuple(optimizer["betas"])}),
            scheduler=_build(ScheduleSettings, top["scheduler"], "scheduler."),
            gradient_checkpointing=_build(
                CheckpointFlags, top["gradient_checkpointing"], "gradient_checkpointing."
            ),
            precision=str(top["precision"]),
            cpu_adam=bool(top["cpu_adam"]),
        )


def resolve_image_size(requested: int | None, config: YiVLConfig) -> int:
    """The tower's input side for a run: ``requested``, or the base model's when it is null.

    YivlError when it is not a positive multiple of the ViT patch size (checked before any weight).
    """
    size = int(requested or config.image_size)
    check_image_size(size, int(config.vision["patch_size"]))
    return size


def _fields_of(cls: type, data: object, where: str) -> dict[str, Any]:
    """``data`` as a dict holding every field of ``cls`` that has no default, and nothing else."""
    if not isinstance(data, Mapping):
        name = where.rstrip(".") or "the plan"
        raise YivlError(f"run plan: {name} must be a mapping, got {type(data).__name__}")
    names = [f.name for f in dataclasses.fields(cls)]
    unknown = sorted(str(k) for k in data if k not in names)
    if unknown:
        raise YivlError(f"run plan: unknown key {where}{unknown[0]}; known: {', '.join(names)}")
    required = (
        f.name
        for f in dataclasses.fields(cls)
        if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING
    )
    missing = [name for name in required if name not in data]
    if missing:
        raise YivlError(
            f"run plan: {where}{missing[0]} is missing; the checkpoint was not written by train.py"
        )
    return dict(data)


def _build(cls: type[T], data: object, where: str) -> T:
    return cls(**_fields_of(cls, data, where))


def _optional(cls: type[T], data: object, where: str) -> T | None:
    return None if data is None else _build(cls, data, where)
