"""The training loss is token-weighted over the whole optimizer step: accumulated micro-batches of very
different supervised lengths give the gradient of one batch of the same samples."""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from tests.data.public_formats import mix665k_records, write_public
from tests.training.grad_probe import GradProbe
from yivl.constants import IGNORE_INDEX
from yivl.models.loss import supervised_count
from yivl.training.build import Dtypes, build_model, trainable_names
from yivl.training.run import train
from yivl.training.token_loss import Lookahead

GRAD_TOL = 1e-6


def one_batch(batches: list[dict[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
    """The samples of ``batches`` (right-padded) as one batch."""
    width = max(b["input_ids"].shape[1] for b in batches)

    def pad(key: str, value: int) -> torch.Tensor:
        rows = [nn.functional.pad(b[key], (0, width - b[key].shape[1]), value=value) for b in batches]
        return torch.cat(rows)

    return {
        "input_ids": pad("input_ids", 0),
        "attention_mask": pad("attention_mask", 0),
        "labels": pad("labels", IGNORE_INDEX),
        "pixel_values": torch.cat([b["pixel_values"] for b in batches]),
    }


def test_four_micro_batches_give_the_gradient_of_one_batch(train_cfg, tmp_path: Path) -> None:
    path = write_public(tmp_path, "mix.json", mix665k_records())
    cfg = train_cfg(
        f"data.train.0.path={path}",
        f"data.train.0.image_folder={tmp_path / 'images'}",
        "data.batch_size=1",
        "global_batch_size=4",
        "data.group_by_length=false",
        "data.num_workers=0",
        "data.pin_memory=false",
        "trainer.max_steps=1",
        "trainer.limit_val_batches=0",
        "trainer.log_every_n_steps=1",
        "model.loss_chunk_size=3",
        "export.enabled=false",
        "+callbacks.grads._target_=tests.training.grad_probe.GradProbe",
        out=tmp_path / "run",
        data="json",
    )
    result = train(cfg)
    (probe,) = [c for c in result.trainer.callbacks if isinstance(c, GradProbe)]
    (micro,) = probe.batches
    counts = [int(supervised_count(b["labels"])) for b in micro]
    assert len(micro) == 4 and max(counts) >= 3 * min(counts), counts

    reference = build_model(result.module.plan, Dtypes.for_precision("32-true"))
    batch = one_batch(micro)
    out = reference(batch["input_ids"], batch["attention_mask"], batch["labels"], batch["pixel_values"])
    out.loss.backward()
    grads = [p.grad for p in reference.parameters() if p.requires_grad]
    want = dict(zip(trainable_names(reference), grads, strict=True))
    (got,) = probe.grads
    assert sorted(got) == sorted(f"model.{name}" for name in want)
    assert max(float((got[f"model.{k}"] - g).abs().max()) for k, g in want.items()) < GRAD_TOL
    assert abs(float(result.trainer.callback_metrics["train/loss"]) - float(out.loss)) < GRAD_TOL


def test_lookahead_shows_items_without_consuming_them() -> None:
    it = Lookahead(iter(range(5)))
    assert next(it) == 0
    assert it.peek(2) == [1, 2]
    assert it.peek(9) == [1, 2, 3, 4]
    assert list(it) == [1, 2, 3, 4]
    assert it.peek(1) == []
