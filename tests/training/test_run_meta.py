"""A checkpoint's run identity: the same run whether its plan stored a null image size or the int."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.checkpoint.helpers import train_py_hparams
from yivl.checkpoint.layout import read_config
from yivl.checkpoint.plan import RunPlan
from yivl.errors import YivlError
from yivl.training.checkpointing import check_same_run, run_meta


def test_a_checkpoint_from_before_the_typed_plan_is_the_same_run(tiny_checkpoint: Path) -> None:
    config, _ = read_config(tiny_checkpoint)
    # the "yivl" entry train.py wrote when the plan stored image_size null (the size was filled in there)
    saved = {
        "model": "tiny",
        "stage": "demo",
        "finetune": "full",
        "image_size": 112,
        "llm_hidden_size": config.llm_hidden_size,
        "llm_layers": int(config.llm["num_hidden_layers"]),
        "vision_layers": int(config.vision["num_hidden_layers"]),
    }
    old = RunPlan.from_dict(train_py_hparams(tiny_checkpoint, image_size=None))
    now = RunPlan.from_dict(train_py_hparams(tiny_checkpoint, image_size=112))
    assert old == now
    assert run_meta(old, config) == run_meta(now, config) == saved
    check_same_run("last.ckpt", saved, run_meta(now, config))
    other = RunPlan.from_dict(train_py_hparams(tiny_checkpoint, image_size=224))
    with pytest.raises(
        YivlError, match=r"^ckpt_path=last.ckpt comes from another run: image_size 112 \(this run: 224\); "
    ):
        check_same_run("last.ckpt", saved, run_meta(other, config))
