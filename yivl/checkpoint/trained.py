"""A training result on its base model: read a train.py checkpoint or an adapter export, rebuild the model.

Both hold a run plan and only the trained tensors. :func:`read_run` gives them back as a
:class:`~yivl.checkpoint.plan.RunPlan` and a state dict; :func:`model_from_plan` builds the model they
fit (base model, the run's resolution and image processor, its LoRA layers) and loads the tensors. The
export (``yivl.checkpoint.exporter``) and evaluation of ``.ckpt`` files both start here.
"""

from __future__ import annotations

import importlib.util
import json
from collections.abc import Mapping
from pathlib import Path

import torch
from safetensors.torch import load_file

from yivl.checkpoint.load import LoadedModel, load_pretrained
from yivl.checkpoint.peft_adapter import YIVL_EXPORT_META, refuse_named_adapters
from yivl.checkpoint.plan import RunPlan
from yivl.data.images import image_processor_for
from yivl.errors import YivlError
from yivl.models.lora import add_lora, local_adapter_name
from yivl.models.resolution import set_image_size

ADAPTER_META = YIVL_EXPORT_META
TRAINABLES = "trainables.safetensors"
ADAPTER_WEIGHTS = "adapter_model.safetensors"


def model_from_plan(
    plan: RunPlan, trainables: Mapping[str, torch.Tensor], dtype: torch.dtype = torch.float32
) -> LoadedModel:
    """Base model of ``plan`` at its resolution (processor included), its LoRA layers, its trained tensors.

    ``trainables`` use our names without prefix; they are the only parameters left requiring grad
    (what an adapter export saves).
    """
    loaded = load_pretrained(plan.model.path, dtype=dtype)
    model = loaded.model
    set_image_size(model, plan.image_size)
    loaded.image_processor = image_processor_for(loaded.image_processor, plan.image_size)
    if plan.has_adapters:
        add_lora(model.llm, plan.lora_block())
    model.requires_grad_(False)
    params = dict(model.named_parameters())
    for name, value in trainables.items():
        if name not in params or params[name].shape != value.shape:
            raise YivlError(
                f"trained tensor {name} {list(value.shape)} does not fit the base model {plan.model.path}; "
                "pass the base model the run started from with --model-base"
            )
        with torch.no_grad():
            params[name].copy_(value)
        params[name].requires_grad_(True)
    return loaded


def read_run(source: Path, base: str | Path | None = None) -> tuple[RunPlan, dict[str, torch.Tensor]]:
    """(plan, trained tensors) from a Lightning checkpoint file/folder or an adapter export.

    ``base`` replaces the base model folder the run recorded.
    """
    raw, tensors = read_source(source)
    return RunPlan.from_dict(raw, base), tensors


def read_source(source: Path) -> tuple[dict, dict[str, torch.Tensor]]:
    """(plan as stored, trained tensors) from a Lightning checkpoint file/folder or an adapter export."""
    if (source / ADAPTER_META).is_file():
        plan = json.loads((source / ADAPTER_META).read_text(encoding="utf-8"))["plan"]
        tensors = dict(load_file(source / TRAINABLES))
        for key, value in load_file(source / ADAPTER_WEIGHTS).items():
            tensors["llm." + local_adapter_name(key)] = value
        return plan, tensors
    ckpt = _load_checkpoint(source)
    if "hyper_parameters" not in ckpt or "state_dict" not in ckpt:
        raise YivlError(f"{source} is not a train.py checkpoint (no hyper_parameters/state_dict)")
    state = {k.removeprefix("model."): v for k, v in ckpt["state_dict"].items()}
    return dict(ckpt["hyper_parameters"]), state


def _load_checkpoint(source: Path) -> dict:
    if source.is_dir() and not is_deepspeed_folder(source):
        refuse_named_adapters(source)
        raise YivlError(
            f"{source} is neither a DeepSpeed checkpoint (no latest, no checkpoint/), an adapter export (no "
            f"{ADAPTER_META}) nor a peft adapter (no adapter_config.json); pass a .ckpt file or one of those"
        )
    if source.is_dir():  # DeepSpeed: one folder of shards; gather the trainable fp32 tensors, safely
        if importlib.util.find_spec("deepspeed") is None:
            raise YivlError(f"{source} is a DeepSpeed checkpoint; install deepspeed to read it")
        from yivl.checkpoint.deepspeed_zero import read_zero_checkpoint

        return read_zero_checkpoint(source)
    if not source.is_file():
        raise YivlError(f"checkpoint not found: {source}")
    return torch.load(source, map_location="cpu", weights_only=True)


def is_deepspeed_folder(path: Path) -> bool:
    """A DeepSpeed checkpoint folder as Lightning writes it: a ``latest`` file or a ``checkpoint/`` folder."""
    return (path / "latest").is_file() or (path / "checkpoint").is_dir()
