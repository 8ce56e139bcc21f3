"""empty_init: parameters on the meta device, buffers real and correct."""

from __future__ import annotations

import psutil
import torch

from yivl.models.empty_init import empty_init
from yivl.models.presets import preset
from yivl.models.yivl import YiVL


def test_6b_model_allocates_no_parameter_memory() -> None:
    rss_before = psutil.Process().memory_info().rss
    with empty_init():
        model = YiVL(preset("yi_vl_6b"))
    grown = psutil.Process().memory_info().rss - rss_before
    params = list(model.parameters())
    assert all(p.is_meta for p in params)
    assert sum(p.numel() for p in params) > 6_500_000_000
    assert grown < 500 * 2**20  # the fp32 weights would be ~27 GB
    assert all(p.requires_grad for p in params)


def test_buffers_stay_real_and_equal_to_a_normal_build(tiny_config) -> None:
    with empty_init():
        empty = YiVL(tiny_config)
    normal = YiVL(tiny_config)
    empty_buffers = dict(empty.named_buffers())
    assert empty_buffers.keys() == dict(normal.named_buffers()).keys()
    assert "llm.model.rotary_emb.inv_freq" in empty_buffers
    for name, buf in normal.named_buffers():
        assert not empty_buffers[name].is_meta, name
        torch.testing.assert_close(empty_buffers[name], buf, rtol=0, atol=0)


def test_patch_is_removed_after_the_block() -> None:
    with empty_init():
        pass
    assert not torch.nn.Linear(2, 2).weight.is_meta
