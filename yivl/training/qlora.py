"""QLoRA's 4-bit LLM weights (bitsandbytes) on the layers that get LoRA adapters (``yivl.models.lora``).

Only training quantizes: an export, evaluation and serving merge the adapters into the full-precision
base model instead.
"""

from __future__ import annotations

import torch
from torch import nn

from yivl.checkpoint.plan import QuantSettings
from yivl.errors import YivlError
from yivl.models.lora import llm_linear_names


def quantize_llm(
    llm: nn.Module, quant: QuantSettings, compute_dtype: torch.dtype, device: torch.device
) -> None:
    """Replace the decoder's linear layers by bitsandbytes 4-bit ones (frozen), quantized on ``device``.

    ``quant``: ``type`` (nf4 | fp4), ``double_quant`` (quantize the scales too), ``storage_dtype`` (dtype
    holding the packed weights). Layer outputs are computed in ``compute_dtype``.
    """
    bnb = _bitsandbytes()
    storage = getattr(torch, quant.storage_dtype)
    for name in llm_linear_names(llm):
        old = llm.get_submodule(name)
        new = bnb.nn.Linear4bit(
            old.in_features,
            old.out_features,
            bias=old.bias is not None,
            compute_dtype=compute_dtype,
            compress_statistics=bool(quant.double_quant),
            quant_type=quant.type,
            quant_storage=storage,
            device="meta",
        )
        new.weight = bnb.nn.Params4bit(
            old.weight.data,
            requires_grad=False,
            compress_statistics=bool(quant.double_quant),
            quant_type=quant.type,
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
