"""Start-up checks: config combinations that cannot work are refused with one line saying why."""

from __future__ import annotations

import importlib.util
from collections.abc import Mapping
from pathlib import Path

from yivl.checkpoint.trained import is_deepspeed_folder
from yivl.config.schema import check
from yivl.config.schemas import TRAIN
from yivl.errors import YivlError
from yivl.training.strategies import offloads_optimizer, zero_stage


def check_config(cfg: Mapping, accelerator: str, precision: str) -> None:
    """The schema's types and ranges (yivl.config.schemas.TRAIN), then every refusal below, in order;
    ``accelerator`` is cpu/gpu after resolving auto."""
    check(cfg, TRAIN)
    module, finetune, strategy = cfg["module"], cfg["finetune"], cfg["strategy"]
    check_finetune(module["stage"], module["train"]["llm"], finetune["method"])
    check_demo_model(module["stage"], cfg["model"]["name"])
    check_fsdp(strategy, finetune["method"])
    check_strategy(strategy, accelerator)
    check_precision(precision, accelerator)
    if finetune["method"] == "qlora":
        check_qlora(finetune, strategy, precision)
    check_val_generation(cfg["val_generation"], strategy)


def check_precision(precision: str, accelerator: str) -> None:
    """Mixed precision is for GPUs: CPU autocast hands the CLIP tower's LayerNorms bf16 inputs with
    fp32 weights, which the CPU kernels reject mid-step."""
    if accelerator == "cpu" and precision.endswith("-mixed"):
        raise YivlError(
            f"trainer.precision={precision} needs a GPU (CPU autocast cannot run the CLIP tower); "
            "use trainer.precision=32-true on the CPU"
        )


def check_finetune(stage: str, llm: str, method: str) -> None:
    """The stage's LLM mode (full/lora/frozen) and the fine-tune method (full/lora/qlora) must agree."""
    if llm == "full" and method != "full":
        raise YivlError(
            f"finetune={method} trains LoRA adapters on a frozen{' 4-bit' if method == 'qlora' else ''} LLM, "
            f"but experiment={stage} trains the LLM in full; use experiment={method} (or finetune=full)"
        )
    if llm == "frozen" and method != "full":
        raise YivlError(
            f"finetune={method} adds adapters to the LLM, but experiment={stage} keeps the LLM frozen; "
            "use finetune=full"
        )
    if llm == "lora" and method == "full":
        raise YivlError(f"experiment={stage} trains LoRA adapters; use finetune=lora or finetune=qlora")


def check_demo_model(stage: str, model: str) -> None:
    """The default settings are tuned for the tiny model (learning rate 5e-4, 112 px)."""
    if stage == "demo" and model != "tiny":
        raise YivlError(
            f"model={model} needs a training stage: add experiment=stage1|stage2|stage3|lora|qlora "
            "(the defaults without one are the tiny demo's)"
        )


def check_fsdp(strategy: Mapping, method: str) -> None:
    """FSDP2 all-gathers bitsandbytes' Params4bit into plain tensors, losing their quantization state."""
    if strategy["name"] == "fsdp" and method == "qlora":
        raise YivlError(
            "finetune=qlora with strategy=fsdp: FSDP2 cannot shard 4-bit bitsandbytes weights; "
            "use strategy=ddp or strategy=deepspeed_zero2 for QLoRA, or finetune=lora with strategy=fsdp"
        )


def check_strategy(strategy: Mapping, accelerator: str) -> None:
    """DeepSpeed needs its package; it runs on GPUs and on CPU processes (yivl.training.deepspeed_cpu)."""
    if strategy["name"] != "deepspeed":
        return
    label = f"strategy=deepspeed_zero{zero_stage(strategy)}" + (
        "_offload" if offloads_optimizer(strategy) else ""
    )
    if importlib.util.find_spec("deepspeed") is None:
        raise YivlError(f"{label} needs the deepspeed package: pip install 'yivl[deepspeed]'")


def check_val_generation(val_generation: Mapping, strategy: Mapping) -> None:
    """The validation generation task needs the whole model on every rank: no strategy that shards it."""
    if val_generation["type"] is None:
        return
    if strategy["name"] == "fsdp" or zero_stage(strategy) == 3:
        name = "fsdp" if strategy["name"] == "fsdp" else "deepspeed_zero3"
        raise YivlError(
            f"val_generation needs the whole model on every rank, but strategy={name} shards it; use "
            "strategy=ddp or strategy=deepspeed_zero2, or turn the task off with val_generation=none"
        )


def check_qlora(finetune: Mapping, strategy: Mapping, precision: str) -> None:
    """4-bit weights: bitsandbytes present; sharded strategies need storage dtype == compute dtype."""
    if importlib.util.find_spec("bitsandbytes") is None:
        raise YivlError("finetune=qlora needs bitsandbytes: pip install 'yivl[qlora]'")
    if offloads_optimizer(strategy) or (
        strategy["name"] == "deepspeed" and "offload_param" in strategy["config"].get("zero_optimization", {})
    ):
        raise YivlError(
            "finetune=qlora cannot offload 4-bit weights to the CPU; use strategy=deepspeed_zero2 or ddp"
        )
    shards_params = zero_stage(strategy) == 3
    compute = (
        "bfloat16" if precision.startswith("bf16") else "float16" if precision.startswith("16") else "float32"
    )
    storage = str(finetune["quant"]["storage_dtype"])
    if shards_params and storage != compute:
        raise YivlError(
            "strategy=deepspeed_zero3 shards 4-bit weights by their storage dtype, which must equal the "
            f"compute dtype: set finetune.quant.storage_dtype={compute} (it is {storage}), "
            "or use strategy=deepspeed_zero2"
        )


def check_resume_kind(path: Path, strategy: Mapping, world_size: int) -> None:
    """A checkpoint resumes under the kind of strategy that wrote it: a DeepSpeed folder under DeepSpeed
    with as many ranks as wrote it (its optimizer shards are per rank), a file under the others."""
    ds = strategy["name"] == "deepspeed"
    if path.is_dir() and not is_deepspeed_folder(path):
        raise YivlError(f"ckpt_path={path} is a folder but not a DeepSpeed checkpoint; give a .ckpt file")
    if path.is_dir() and not ds:
        raise YivlError(
            f"ckpt_path={path} is a DeepSpeed checkpoint folder; resume it with the strategy that wrote it "
            "(strategy=deepspeed_zero2 or deepspeed_zero3), or export it and start from the export"
        )
    if path.is_file() and ds:
        raise YivlError(
            f"ckpt_path={path} is a single-file checkpoint, which DeepSpeed cannot resume; resume it with "
            "the strategy that wrote it (strategy=ddp or auto)"
        )
    if path.is_dir():
        from yivl.checkpoint.deepspeed_zero import zero_run_state

        ranks = zero_run_state(path)[1]
        if ranks != world_size:
            raise YivlError(
                f"ckpt_path={path} holds the optimizer shards of {ranks} ranks, this run has {world_size}; "
                f"resume with {ranks} processes (trainer.devices x trainer.num_nodes)"
            )
