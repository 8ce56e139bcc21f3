"""train.py with data.packing=true on the tiny model: packed batches reach the model and train."""

from __future__ import annotations

import math

import torch

from yivl.models.yivl import YiVL
from yivl.training.run import train


def test_packed_stage3_training_runs_on_packed_rows(train_cfg, tmp_path, monkeypatch) -> None:
    seen = []
    forward = YiVL.forward

    def spy(self, *args, **kwargs):
        seen.append(kwargs.get("sequence_ids"))
        return forward(self, *args, **kwargs)

    monkeypatch.setattr(YiVL, "forward", spy)
    cfg = train_cfg(
        "experiment=stage3",
        "module.image_size=null",
        "data.packing=true",
        "data.pack_length=512",
        "trainer.max_steps=3",
        "trainer.limit_val_batches=1",
        "export.enabled=false",
        out=tmp_path,
    )
    result = train(cfg)
    assert result.trainer.global_step == 3
    packed = [s for s in seen if s is not None]
    assert len(packed) >= 3  # every training step; validation batches stay one sample a row
    assert all(int(s.max()) >= 1 for s in packed)  # rows hold more than one sample
    loss = result.trainer.callback_metrics["train/loss"]
    assert math.isfinite(float(loss)) and torch.is_tensor(loss)
