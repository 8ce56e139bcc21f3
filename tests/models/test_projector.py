"""The mlp2x_gelu_Norm projector: layer order, key names, parameter count, and the other types."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from yivl.errors import YivlError
from yivl.models.projector import IdentityMap, build_projector


def test_layer_order_and_exact_gelu() -> None:
    proj = build_projector("mlp2x_gelu_Norm", 16, 32)
    kinds = [type(m) for m in proj]
    assert kinds == [nn.Linear, nn.LayerNorm, nn.GELU, nn.Linear, nn.LayerNorm]
    assert proj[2].approximate == "none"
    assert proj[1].eps == 1e-5 and proj[4].eps == 1e-5
    assert (proj[0].in_features, proj[0].out_features, proj[3].in_features) == (16, 32, 32)


def test_state_dict_keys_are_the_release_ones() -> None:
    keys = list(build_projector("mlp2x_gelu_Norm", 16, 32).state_dict())
    assert keys == [f"{i}.{p}" for i in (0, 1, 3, 4) for p in ("weight", "bias")]


def test_forward_is_linear_ln_gelu_linear_ln() -> None:
    torch.manual_seed(0)
    proj = build_projector("mlp2x_gelu_Norm", 16, 32)
    for ln in (proj[1], proj[4]):  # non-trivial affine so a swapped order would show
        nn.init.normal_(ln.weight)
        nn.init.normal_(ln.bias)
    x = torch.randn(2, 5, 16)
    h = F.layer_norm(F.linear(x, proj[0].weight, proj[0].bias), (32,), proj[1].weight, proj[1].bias)
    h = F.gelu(h)
    h = F.layer_norm(F.linear(h, proj[3].weight, proj[3].bias), (32,), proj[4].weight, proj[4].bias)
    torch.testing.assert_close(proj(x), h)


def test_parameter_count_of_the_6b_projector() -> None:
    with torch.device("meta"):
        proj = build_projector("mlp2x_gelu_Norm", 1280, 4096)
    assert sum(p.numel() for p in proj.parameters()) == 22_044_672
    shapes = {k: tuple(v.shape) for k, v in proj.state_dict().items()}
    assert shapes["0.weight"] == (4096, 1280) and shapes["3.weight"] == (4096, 4096)


def test_other_types() -> None:
    assert isinstance(build_projector("linear", 8, 4), nn.Linear)
    assert isinstance(build_projector("identity", 8, 8), IdentityMap)
    deep = build_projector("mlp3x_gelu", 8, 4)
    assert [type(m) for m in deep] == [nn.Linear, nn.GELU, nn.Linear, nn.GELU, nn.Linear]


def test_unknown_type_raises() -> None:
    with pytest.raises(YivlError, match="known: mlp2x_gelu_Norm"):
        build_projector("mlp2x_silu", 8, 4)
