"""Where and in what precision a model runs: ``device=`` and ``dtype=`` of evaluate.py and infer.py."""

from __future__ import annotations

import torch

from yivl.config.vocabulary import DTYPE_ALIASES
from yivl.config.vocabulary import DTYPES as DTYPE_NAMES
from yivl.errors import YivlError


def pick_device(device: str) -> torch.device:
    """``auto`` means the first CUDA device when there is one, else the CPU."""
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise YivlError(f"device={device} was asked for but CUDA is not available; use device=cpu")
    return torch.device(device)


DTYPES = {name: getattr(torch, DTYPE_ALIASES.get(name, name)) for name in DTYPE_NAMES if name != "auto"}
"""``dtype=`` names (the schema's list) -> torch dtypes."""


def pick_dtype(dtype: str, device: torch.device) -> torch.dtype:
    """``auto`` is bf16 on CUDA and fp32 on CPU, as the original scripts ran bf16 on GPU."""
    if dtype == "auto":
        return torch.bfloat16 if device.type == "cuda" else torch.float32
    if dtype not in DTYPES:
        raise YivlError(f"unknown dtype={dtype}; use one of auto, {', '.join(sorted(DTYPES))}")
    return DTYPES[dtype]
