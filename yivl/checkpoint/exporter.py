"""Writing exports: a training result in the published Yi-VL layout, or a LoRA adapter beside its base
model; a plain peft adapter merged into its base. The command line is ``yivl.checkpoint.export``."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import torch
from safetensors.torch import save_file

from yivl.checkpoint.layout import CONFIG
from yivl.checkpoint.load import LoadedModel
from yivl.checkpoint.peft_adapter import is_peft_adapter, load_peft_adapter, read_peft_adapter
from yivl.checkpoint.plan import RunPlan
from yivl.checkpoint.save import save_pretrained
from yivl.checkpoint.trained import ADAPTER_META, ADAPTER_WEIGHTS, TRAINABLES, model_from_plan, read_run
from yivl.errors import YivlError
from yivl.models.lora import adapter_state, is_adapter_param, lora_config, merge_lora
from yivl.models.yivl import YiVL


def export_dtype(name: str, model: YiVL) -> torch.dtype:
    """``auto``: the dtype the base checkpoint was stored in (bf16 for the release); else the named one."""
    if name == "auto":
        name = str(model.config.extra.get("torch_dtype") or "float32")
    return named_dtype(name)


def named_dtype(name: str) -> torch.dtype:
    """The floating-point torch dtype called ``name``; YivlError for anything else."""
    dtype = getattr(torch, name, None)
    if not isinstance(dtype, torch.dtype) or not dtype.is_floating_point:
        raise YivlError(f"export dtype {name!r} is not a floating-point torch dtype; use bfloat16 or float32")
    return dtype


def save_merged(loaded: LoadedModel, out: Path, dtype_name: str = "auto") -> Path:
    """Merge any LoRA layers, cast to the export dtype and write the published layout to ``out``."""
    model = loaded.model
    merge_lora(model.llm)
    model.to(export_dtype(dtype_name, model))
    return save_pretrained(model, out, loaded.tokenizer, loaded.image_processor)


def save_adapter(model: YiVL, plan: RunPlan, out: Path) -> Path:
    """Write the adapter export (see the module docstring) of a model with injected LoRA layers."""
    if not any(is_adapter_param(n) for n, _ in model.llm.named_parameters()):
        raise YivlError("export.merge=false applies to LoRA/QLoRA runs only; this run has no adapters")
    out = _empty_dir(out)
    config = lora_config(plan.lora_block())
    config.base_model_name_or_path = str(Path(plan.model.path).resolve())
    config.save_pretrained(str(out))
    save_file(
        {k: v.contiguous().cpu() for k, v in adapter_state(model.llm).items()},
        out / ADAPTER_WEIGHTS,
    )
    others = {n: p.detach().contiguous().cpu() for n, p in model.named_parameters() if p.requires_grad}
    save_file({n: t for n, t in others.items() if not is_adapter_param(n)}, out / TRAINABLES)
    meta = {"plan": plan.to_dict(), "image_size": model.config.image_size}
    (out / ADAPTER_META).write_text(json.dumps(meta, indent=2) + "\n", encoding="utf-8")
    return out


def _empty_dir(out: Path) -> Path:
    if out.exists() and any(out.iterdir()):
        raise YivlError(f"export directory {out} is not empty; choose another one or pass --overwrite")
    out.mkdir(parents=True, exist_ok=True)
    return out


def export_peft_adapter(source: Path, out: Path, base_model: Path | None, dtype_name: str) -> Path:
    """Merge a plain peft adapter into its base model and write the published layout to ``out``."""
    adapter = read_peft_adapter(source, base_model, "--model-base DIR")
    _empty_dir(out)
    # "auto" keeps the base's stored dtype; the merge itself is computed in fp32 either way
    loaded = load_peft_adapter(adapter, None if dtype_name == "auto" else named_dtype(dtype_name))
    model = loaded.model.to(export_dtype(dtype_name, loaded.model))
    return save_pretrained(model, out, loaded.tokenizer, loaded.image_processor)


def export_source(source: Path, out: Path, merge: bool, base_model: Path | None, dtype: str) -> Path:
    """The command's work: read SOURCE, rebuild on the base model, write OUT."""
    if is_peft_adapter(source):
        if not merge:
            raise YivlError(f"{source} is already a peft adapter; drop --no-merge to write the merged model")
        return export_peft_adapter(source, out, base_model, dtype)
    plan, tensors = read_run(source, base_model)
    loaded = model_from_plan(plan, tensors)
    if not merge:
        return save_adapter(loaded.model, plan, out)
    return save_merged(loaded, out, dtype)


def export_replacing(source: Path, out: Path, merge: bool, base_model: Path | None, dtype: str) -> Path:
    """``--overwrite``: export beside ``out`` and swap it in when complete; only an earlier export
    (a published layout or an adapter export) is replaced, never a folder of other files."""
    if not (out.is_dir() and any(out.iterdir())):
        return export_source(source, out, merge, base_model, dtype)
    if not any((out / name).is_file() for name in (CONFIG, ADAPTER_META)):
        raise YivlError(
            f"{out} holds no export (no config.json, no {ADAPTER_META}); --overwrite replaces only an "
            "earlier export: choose another OUT"
        )
    staging = out.with_name(f".{out.name}.partial")
    shutil.rmtree(staging, ignore_errors=True)
    try:
        export_source(source, staging, merge, base_model, dtype)
        shutil.rmtree(out)
        staging.rename(out)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return out.resolve()
