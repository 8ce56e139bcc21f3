"""``attn_implementation`` reaches the tower and the LLM; backends that cannot run are refused in one line."""

from __future__ import annotations

import importlib.util

import pytest
import torch

from yivl.errors import YivlError
from yivl.models.attention import check_attn_implementation
from yivl.models.config import YiVLConfig
from yivl.models.yivl import YiVL


@pytest.mark.parametrize("name", ["eager", "sdpa", "flex_attention"])
def test_both_submodules_report_the_chosen_implementation(tiny_config: YiVLConfig, name: str) -> None:
    check_attn_implementation(name)
    model = YiVL(tiny_config, attn_implementation=name)
    assert model.llm.config._attn_implementation == name
    assert model.vision_tower.clip.config._attn_implementation == name


def test_eager_and_sdpa_give_the_same_logits(tiny_config: YiVLConfig, images: torch.Tensor) -> None:
    torch.manual_seed(0)
    sdpa = YiVL(tiny_config, attn_implementation="sdpa").eval()
    eager = YiVL(tiny_config, attn_implementation="eager").eval()
    eager.load_state_dict(sdpa.state_dict())
    ids = torch.randint(3, tiny_config.llm["vocab_size"], (2, 10))
    ids[:, 1] = -200
    mask = torch.ones_like(ids)
    mask[1, 7:] = 0
    with torch.no_grad():
        want = sdpa(ids, mask, pixel_values=images[:2]).logits
        got = eager(ids, mask, pixel_values=images[:2]).logits
        real = sdpa.splice(ids, mask, pixel_values=images[:2]).attention_mask.bool()  # not the padding
    assert want.shape == got.shape and int(real.sum()) < real.numel()
    assert float((want[real] - got[real]).abs().max()) < 1e-5


def test_unknown_and_missing_backends_are_refused_in_one_line() -> None:
    with pytest.raises(YivlError) as err:
        check_attn_implementation("flash")
    assert str(err.value) == (
        "model.attn_implementation='flash' is unknown; use one of "
        "sdpa, eager, flash_attention_2, flex_attention"
    )
    if importlib.util.find_spec("flash_attn") is None:
        with pytest.raises(YivlError) as err:
            check_attn_implementation("flash_attention_2")
        assert str(err.value) == (
            "model.attn_implementation=flash_attention_2 needs the flash_attn package, "
            "which is not installed (pip install flash-attn --no-build-isolation, CUDA only); "
            "use model.attn_implementation=sdpa"
        )
