"""``debug=overfit`` learns its two batches: the training loss falls to about zero."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.training.conftest import SMALL_DATA, compose_train
from yivl.training.run import train


@pytest.mark.slow
def test_debug_overfit_drives_the_training_loss_to_about_zero(
    tiny_checkpoint: Path, data_dir: Path, tmp_path: Path
) -> None:
    cfg = compose_train(
        [
            "debug=overfit",
            f"model.path={tiny_checkpoint}",
            "model.build_if_missing=false",
            f"paths.data_dir={data_dir}",
            f"paths.output_dir={tmp_path / 'run'}",
            "extras.print_config=false",
            *SMALL_DATA,
        ]
    )
    result = train(cfg)
    trainer = result.trainer
    assert trainer.global_step == 2 * cfg.trainer.max_epochs  # two batches an epoch, one step each
    assert float(trainer.callback_metrics["train/loss"]) < 0.1  # measured: 0.02 (starts at 7)
    assert not (tmp_path / "run" / "export").exists()
