"""The Lightning validation hook logs the same token-weighted loss as evaluate.py, for any batch size."""

from __future__ import annotations

import math

import lightning as L
import pytest
import torch
from torch.utils.data import DataLoader

from tests.evaluation.task_files import one_thread  # noqa: F401 - fixture
from yivl.checkpoint.load import LoadedModel
from yivl.data.chat import Turn, build_training_example
from yivl.evaluation.lightning import ValidationLoss
from yivl.evaluation.likelihood import pad_sequences, sequence_logprobs
from yivl.evaluation.task_types.loss import summarize_loss

pytestmark = pytest.mark.usefixtures("one_thread")

REPLIES = ["red", "A blue circle on the left side of a light picture.", "2", "no", "It is a green triangle."]


class Validator(L.LightningModule):
    def __init__(self, loaded: LoadedModel) -> None:
        super().__init__()
        self.model = loaded.model
        self.val_loss = ValidationLoss()

    def validation_step(self, batch: dict, batch_idx: int) -> None:
        out = self.model(
            input_ids=batch["input_ids"], attention_mask=batch["attention_mask"], labels=batch["labels"]
        )
        self.val_loss.log(self, out.loss, out.num_tokens, batch_size=batch["input_ids"].shape[0])


def examples(loaded: LoadedModel) -> list[tuple[list[int], list[int]]]:
    out = []
    for reply in REPLIES:
        ex = build_training_example(
            loaded.tokenizer, [Turn("human", "What is in the picture?"), Turn("assistant", reply)]
        )
        out.append((ex.input_ids, ex.labels))
    return out


def collate(rows: list) -> dict[str, torch.Tensor]:
    ids, mask, labels = pad_sequences(rows, 0, "right")
    return {"input_ids": ids, "attention_mask": mask, "labels": labels}


def validate(loaded: LoadedModel, batch_size: int) -> dict[str, float]:
    trainer = L.Trainer(
        accelerator="cpu",
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
    )
    loader = DataLoader(examples(loaded), batch_size=batch_size, collate_fn=collate)
    (metrics,) = trainer.validate(Validator(loaded), dataloaders=loader, verbose=False)
    return metrics


def test_val_loss_is_token_weighted_and_batch_size_invariant(tiny_loaded: LoadedModel) -> None:
    seqs = examples(tiny_loaded)
    sums, counts = sequence_logprobs(tiny_loaded.model, *collate(seqs).values(), None)
    expected = summarize_loss([{"logprob": s, "n_tokens": c} for s, c in zip(sums, counts, strict=True)])
    for batch_size in (1, 2, 5):
        metrics = validate(tiny_loaded, batch_size)
        assert metrics["val/loss"] == pytest.approx(expected.values["nll"], rel=1e-5)
        assert metrics["val/ppl"] == pytest.approx(math.exp(expected.values["nll"]), rel=1e-5)
