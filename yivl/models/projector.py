"""The multimodal projector that maps vision-tower features into the LLM's embedding space."""

from __future__ import annotations

import re

import torch
from torch import nn

from yivl.models.config import check_projector_type


class IdentityMap(nn.Module):
    """Pass-through projector (``mm_projector_type: identity``; needs equal widths)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Features [..., C] -> the same tensor."""
        return x


def build_projector(projector_type: str, in_dim: int, out_dim: int) -> nn.Module:
    """Build the projector named like the original builder (VL/llava/model/multimodal_projector/builder.py).

    ``mlp2x_gelu_Norm`` (Yi-VL) gives ``Sequential(Linear, LayerNorm, GELU, Linear, LayerNorm)`` whose
    parameter keys are 0, 1, 3, 4; ``mlpNx_gelu`` the same without the LayerNorms; ``linear`` one Linear;
    ``identity`` nothing. Maps features [..., in_dim] -> [..., out_dim]. Unknown names raise YivlError.
    """
    check_projector_type(projector_type)
    if projector_type == "linear":
        return nn.Linear(in_dim, out_dim)
    if projector_type == "identity":
        return IdentityMap()
    match = re.match(r"^mlp(\d+)x_gelu(_Norm)?$", projector_type)
    depth, use_norm = int(match.group(1)), match.group(2) is not None

    def block(dim_in: int) -> list[nn.Module]:
        return [nn.Linear(dim_in, out_dim)] + ([nn.LayerNorm(out_dim)] if use_norm else [])

    layers = block(in_dim)
    for _ in range(1, depth):
        layers += [nn.GELU(), *block(out_dim)]
    return nn.Sequential(*layers)
