"""LoRA and QLoRA on the LLM: which layers, injecting adapters (peft), 4-bit weights (bitsandbytes).

Adapters go on every linear layer of the LLM's decoder, chosen by *full module path* relative to the
LLM, so no layer of the vision tower or projector can match (LLaVA's leaf-name matching also caught
CLIP's q/k/v_proj). The LM head is left out, as in LLaVA and the QLoRA paper. Adapters are injected
in place (the LLM stays a ``LlamaForCausalLM``, so YiVL's forward is unchanged); their names follow peft
(``...q_proj.lora_A.default.weight``) and an adapter state dict saves as a standard peft adapter.
"""

from __future__ import annotations

import re
from collections.abc import Mapping

import torch
from peft import LoraConfig, inject_adapter_in_model
from peft.tuners.lora import LoraLayer
from torch import nn

from yivl.errors import YivlError

LLM_LINEAR_PATTERN = r"model\.layers\.\d+\.(self_attn\.(q|k|v|o)_proj|mlp\.(gate|up|down)_proj)"
"""Full module paths (relative to the LlamaForCausalLM) of the decoder's linear layers."""

ADAPTER_NAME = "default"


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


def quantize_llm(llm: nn.Module, quant: Mapping, compute_dtype: torch.dtype, device: torch.device) -> None:
    """Replace the decoder's linear layers by bitsandbytes 4-bit ones (frozen), quantized on ``device``.

    ``quant``: ``type`` (nf4 | fp4), ``double_quant`` (quantize the scales too), ``storage_dtype`` (dtype
    holding the packed weights). Layer outputs are computed in ``compute_dtype``.
    """
    bnb = _bitsandbytes()
    storage = getattr(torch, str(quant["storage_dtype"]))
    for name in llm_linear_names(llm):
        old = llm.get_submodule(name)
        new = bnb.nn.Linear4bit(
            old.in_features,
            old.out_features,
            bias=old.bias is not None,
            compute_dtype=compute_dtype,
            compress_statistics=bool(quant["double_quant"]),
            quant_type=str(quant["type"]),
            quant_storage=storage,
            device="meta",
        )
        new.weight = bnb.nn.Params4bit(
            old.weight.data,
            requires_grad=False,
            compress_statistics=bool(quant["double_quant"]),
            quant_type=str(quant["type"]),
            quant_storage=storage,
            module=new,
        )
        if old.bias is not None:
            new.bias = nn.Parameter(old.bias.data.to(compute_dtype), requires_grad=False)
        parent, _, leaf = name.rpartition(".")
        setattr(llm.get_submodule(parent), leaf, new.to(device))  # .to() quantizes the weight
    llm.is_loaded_in_4bit = True  # tells peft to wrap these layers with its bitsandbytes-aware LoRA layer


def _bitsandbytes():
    try:
        import bitsandbytes
    except ImportError as err:
        raise YivlError("finetune=qlora needs bitsandbytes: pip install 'yivl[qlora]'") from err
    return bitsandbytes


def adapter_state(llm: nn.Module) -> dict[str, torch.Tensor]:
    """The LLM's LoRA tensors under peft's saved names (``base_model.model.<path>.lora_A.weight``)."""
    prefix, tag = "base_model.model.", f".{ADAPTER_NAME}."
    return {
        prefix + name.replace(tag, "."): param.detach()
        for name, param in llm.named_parameters()
        if is_adapter_param(name)
    }


def load_adapter_state(llm: nn.Module, state: Mapping[str, torch.Tensor]) -> None:
    """Load tensors saved by :func:`adapter_state` into an LLM with injected adapters."""
    prefix, tag = "base_model.model.", f".{ADAPTER_NAME}."
    params = dict(llm.named_parameters())
    for key, value in state.items():
        name = (
            key.removeprefix(prefix).replace(".lora_A.", ".lora_A" + tag).replace(".lora_B.", ".lora_B" + tag)
        )
        if name not in params:
            raise YivlError(
                f"adapter tensor {key} has no matching LoRA layer in the model; wrong base model?"
            )
        with torch.no_grad():
            params[name].copy_(value)
