"""LoRA on the LLM: which layers, injecting adapters (peft), merging them, their saved names.

Adapters go on every linear layer of the LLM's decoder, chosen by *full module path* relative to the
LLM, so no layer of the vision tower or projector can match (LLaVA's leaf-name matching also caught
CLIP's q/k/v_proj); QLoRA's 4-bit weights (``yivl.training.qlora``) go on the same layers. The LM head
is left out, as in LLaVA and the QLoRA paper. Adapters are injected in place (the LLM stays a
``LlamaForCausalLM``, so YiVL's forward is unchanged); their names follow peft
(``...q_proj.lora_A.default.weight``) and an adapter state dict saves as a standard peft adapter.
Training injects them, ``yivl.checkpoint`` saves and merges them for export, evaluation merges them.
"""

from __future__ import annotations

import re
from collections.abc import Mapping

import torch
from peft import LoraConfig, inject_adapter_in_model
from peft.tuners.lora import LoraLayer
from torch import nn

LLM_LINEAR_PATTERN = r"model\.layers\.\d+\.(self_attn\.(q|k|v|o)_proj|mlp\.(gate|up|down)_proj)"
"""Full module paths (relative to the LlamaForCausalLM) of the decoder's linear layers."""

ADAPTER_NAME = "default"
ADAPTER_PREFIX = "base_model.model."
"""What peft puts in front of a saved adapter tensor's name."""


def llm_linear_names(llm: nn.Module) -> list[str]:
    """Module paths of the LLM linear layers that get adapters (and 4-bit weights under QLoRA)."""
    return [name for name, _ in llm.named_modules() if re.fullmatch(LLM_LINEAR_PATTERN, name)]


def lora_config(lora: Mapping) -> LoraConfig:
    """peft LoraConfig for the LLM from the ``finetune.lora`` block (r, alpha, dropout)."""
    return LoraConfig(
        r=int(lora["r"]),
        lora_alpha=int(lora["alpha"]),
        lora_dropout=float(lora["dropout"]),
        target_modules=LLM_LINEAR_PATTERN,
        bias="none",
        task_type="CAUSAL_LM",
    )


def add_lora(llm: nn.Module, lora: Mapping) -> None:
    """Inject LoRA adapters in place into ``llm`` (a LlamaForCausalLM); only the adapters require grad."""
    inject_adapter_in_model(lora_config(lora), llm, adapter_name=ADAPTER_NAME)
    for name, param in llm.named_parameters():
        param.requires_grad_(".lora_" in name)


def is_adapter_param(name: str) -> bool:
    """True for a LoRA parameter name (``...lora_A.default.weight``)."""
    return ".lora_A." in name or ".lora_B." in name


def merge_lora(llm: nn.Module) -> int:
    """Fold every LoRA adapter into its base weight and remove the adapter modules; returns their number."""
    merged = 0
    for name, module in list(llm.named_modules()):
        if isinstance(module, LoraLayer):
            module.merge(safe_merge=True)
            parent, _, leaf = name.rpartition(".")
            setattr(llm.get_submodule(parent), leaf, module.get_base_layer())
            merged += 1
    return merged


def adapter_state(llm: nn.Module) -> dict[str, torch.Tensor]:
    """The LLM's LoRA tensors under peft's saved names (``base_model.model.<path>.lora_A.weight``)."""
    tag = f".{ADAPTER_NAME}."
    return {
        ADAPTER_PREFIX + name.replace(tag, "."): param.detach()
        for name, param in llm.named_parameters()
        if is_adapter_param(name)
    }


def local_adapter_name(key: str) -> str:
    """The LLM parameter name of a tensor saved by :func:`adapter_state` (its inverse for one key)."""
    tag = f".{ADAPTER_NAME}."
    name = key.removeprefix(ADAPTER_PREFIX)
    return name.replace(".lora_A.", ".lora_A" + tag).replace(".lora_B.", ".lora_B" + tag)
