"""train.py's ``model.attn_implementation`` reaches the tower and the LLM; a backend that cannot run is
refused in one line before any weight is read."""

from __future__ import annotations

import importlib.util

import pytest

from yivl.errors import YivlError
from yivl.training.run import train

ONE_STEP = ["trainer.max_steps=1", "trainer.limit_val_batches=0", "export.enabled=false"]


def test_the_chosen_backend_is_what_both_submodules_report(train_cfg) -> None:
    result = train(train_cfg("model.attn_implementation=eager", *ONE_STEP))
    model = result.module.model
    assert model.llm.config._attn_implementation == "eager"
    assert model.vision_tower.clip.config._attn_implementation == "eager"


def test_a_backend_that_is_not_installed_is_refused_before_the_model_loads(train_cfg, monkeypatch) -> None:
    assert importlib.util.find_spec("flash_attn") is None  # this environment has no flash_attn

    def no_load(*args: object, **kwargs: object) -> None:
        raise AssertionError("the model was loaded")

    monkeypatch.setattr("yivl.training.build.load_pretrained", no_load)
    with pytest.raises(YivlError) as err:
        train(train_cfg("model.attn_implementation=flash_attention_2", *ONE_STEP))
    assert str(err.value).startswith(
        "model.attn_implementation=flash_attention_2 needs the flash_attn package, which is not installed"
    )
