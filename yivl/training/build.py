"""Build the model a stage trains: load the base checkpoint, set the resolution, freeze, add adapters.

Input is the run plan (``yivl.checkpoint.plan.RunPlan``, plain values from the config), never a
module: the weights are read from ``model.path`` inside ``configure_model``. What trains:

=============  ====================  =========  ==============================================
stage          vision tower          projector  LLM
=============  ====================  =========  ==============================================
stage1/stage2  trains (*)            trains     frozen
stage3         trains                trains     trains (all weights)
lora / qlora   frozen (configurable) trains     LoRA adapters only (qlora: base weights 4-bit)
=============  ====================  =========  ==============================================

(*) except the parts after the feature layer Yi-VL reads (layer -2), which never reach the loss.
Trainable parameters are kept in fp32 (the master copy under bf16 autocast); frozen ones in
``param_dtype`` (bf16 on a GPU). Under QLoRA the LLM's norms stay fp32 too ("higher precision").
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from yivl.checkpoint.layout import read_config
from yivl.checkpoint.load import load_pretrained
from yivl.checkpoint.plan import CheckpointFlags, RunPlan
from yivl.errors import YivlError
from yivl.models.empty_init import empty_init
from yivl.models.lora import add_lora
from yivl.models.resolution import set_image_size
from yivl.models.yivl import YiVL
from yivl.training.optim import is_norm
from yivl.training.qlora import quantize_llm


@dataclass(frozen=True)
class Dtypes:
    """``param``: dtype of frozen weights; ``compute``: dtype 4-bit layers compute in."""

    param: torch.dtype
    compute: torch.dtype

    @classmethod
    def for_precision(cls, precision: str) -> Dtypes:
        """bf16 weights and compute under a bf16 precision, fp16 under 16-*, fp32 otherwise."""
        if precision.startswith("bf16"):
            return cls(torch.bfloat16, torch.bfloat16)
        if precision.startswith("16"):
            return cls(torch.float16, torch.float16)
        return cls(torch.float32, torch.float32)


def build_model(plan: RunPlan, dtypes: Dtypes, device: torch.device | str = "cpu") -> YiVL:
    """The YiVL model of ``plan``, ready to train."""
    attn = plan.model.attn_implementation
    model = load_pretrained(
        plan.model.path, dtype=dtypes.param, device=device, attn_implementation=attn
    ).model
    return prepare_model(model, plan, dtypes, torch.device(device))


def empty_model(plan: RunPlan, dtypes: Dtypes) -> YiVL:
    """The model :func:`yivl.training.build.build_model` returns, with parameters on the meta device."""
    config, _ = read_config(Path(plan.model.path))
    with empty_init():
        model = YiVL(config, attn_implementation=plan.model.attn_implementation)
    for param in model.parameters():
        if param.is_floating_point():
            param.data = param.data.to(dtypes.param)
    return prepare_model(model, plan, dtypes, torch.device("meta"))


def prepare_model(model: YiVL, plan: RunPlan, dtypes: Dtypes, device: torch.device) -> YiVL:
    """Resolution, what trains, activation checkpointing and train mode for a built ``model``."""
    set_image_size(model, plan.image_size)
    apply_trainable(model, plan, dtypes, device)
    enable_checkpointing(model, plan.gradient_checkpointing)
    return model.train()  # loaded in eval mode; Lightning keeps each submodule's mode as it finds it


def apply_trainable(model: YiVL, plan: RunPlan, dtypes: Dtypes, device: torch.device) -> None:
    """Freeze everything, then unfreeze what ``plan.train`` selects; quantize/inject adapters per
    ``plan.finetune``."""
    model.requires_grad_(False)
    if plan.finetune.method == "qlora":
        if plan.finetune.quant is None:
            raise YivlError("finetune=qlora needs a finetune.quant block (type, double_quant, storage_dtype)")
        quantize_llm(model.llm, plan.finetune.quant, dtypes.compute, device)
        _norms_to_fp32(model.llm)
    if plan.has_adapters:
        add_lora(model.llm, plan.lora_block())
    elif plan.train.llm == "full":
        model.llm.requires_grad_(True)
    model.vision_tower.requires_grad_(bool(plan.train.vision_tower))
    freeze_unused_vision_layers(model)
    model.mm_projector.requires_grad_(bool(plan.train.projector))
    for param in model.parameters():
        if param.requires_grad and param.dtype != torch.float32:
            param.data = param.data.float()


def unused_vision_prefixes(model: YiVL) -> list[str]:
    """Tower parts after the feature layer (Yi-VL reads layer -2): the last encoder layer(s), post norm.

    They never reach the loss, so they get no gradient; DDP refuses such parameters unless told to
    search for them every step. Freezing them changes nothing else.
    """
    clip = model.vision_tower.clip
    depth = len(clip.encoder.layers)
    used = model.vision_tower.select_layer % (depth + 1)  # hidden_states[i] is the output of layer i - 1
    return [f"vision_tower.clip.encoder.layers.{i}." for i in range(used, depth)] + [
        "vision_tower.clip.post_layernorm."
    ]


def freeze_unused_vision_layers(model: YiVL) -> None:
    prefixes = tuple(unused_vision_prefixes(model))
    for name, param in model.named_parameters():
        if name.startswith(prefixes):
            param.requires_grad_(False)


def _norms_to_fp32(llm: nn.Module) -> None:
    for module in llm.modules():
        if is_norm(module):
            module.float()


def enable_checkpointing(model: YiVL, flags: CheckpointFlags) -> None:
    """Recompute activations in backward for the LLM and/or the ViT (non-reentrant: works with LoRA)."""
    for enabled, module in ((flags.llm, model.llm), (flags.vision_tower, model.vision_tower.clip)):
        if enabled:
            _checkpoint_layers(module)


def _checkpoint_layers(module: nn.Module) -> None:
    kwargs = {"use_reentrant": False}
    if hasattr(module, "activation_checkpointing_enable"):  # transformers >= 5.x; the old name warns
        module.activation_checkpointing_enable(activation_checkpointing_kwargs=kwargs)
    else:
        module.gradient_checkpointing_enable(gradient_checkpointing_kwargs=kwargs)


WRAPPER_PREFIXES = ("_fsdp_wrapped_module.", "_checkpoint_wrapped_module.")
"""Module names FSDP and activation checkpointing insert; state dicts leave them out."""


def trainable_names(model: nn.Module) -> list[str]:
    """Names of the parameters that require grad, in module order, as they appear in a state dict."""
    names = []
    for name, param in model.named_parameters():
        if param.requires_grad:
            for prefix in WRAPPER_PREFIXES:
                name = name.replace(prefix, "")
            names.append(name)
    return names
