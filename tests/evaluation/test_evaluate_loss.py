"""The loss task and likelihood scoring: token-weighted NLL independent of batch size and padding side."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch

from tests.evaluation.task_files import (
    no_network,  # noqa: F401 - fixture
    one_thread,  # noqa: F401 - fixture
    task_records,
    write_images,
    write_jsonl,
)
from yivl.checkpoint.load import LoadedModel
from yivl.constants import IGNORE_INDEX, IMAGE_PLACEHOLDER
from yivl.data.chat import Turn, build_training_example, tokenize_prompt
from yivl.evaluation.likelihood import continuation_sequence, pad_sequences, sequence_logprobs
from yivl.evaluation.records import SampleWriter
from yivl.evaluation.registry import build_items
from yivl.evaluation.runner import RunOptions, TaskRunner
from yivl.evaluation.sources import read_task_file
from yivl.evaluation.task_types.loss import summarize_loss
from yivl.evaluation.tasks import TaskSpec
from yivl.models.generation import PrefixCache

pytestmark = pytest.mark.usefixtures("no_network", "one_thread")


def conversations(images: list[str]) -> list[dict]:
    """Loss records of different lengths: one and two turns, with and without an image."""
    records = task_records("loss", images, n=5)
    records[1]["conversations"] += [
        {"from": "human", "value": "And its shape?"},
        {"from": "gpt", "value": "It is a square drawn in the middle of a light grey picture."},
    ]
    records[3] = {
        "id": "text-only",
        "conversations": [{"from": "human", "value": "Hi"}, {"from": "gpt", "value": "Hello."}],
    }
    return records


def loss_summary(loaded: LoadedModel, path: Path, tmp: Path, batch_size: int, side: str) -> dict:
    spec = TaskSpec("loss", "loss", path, {"padding_side": side})
    items = build_items("loss", read_task_file(path), spec.options)
    runner = TaskRunner(loaded, RunOptions(batch_size=batch_size, num_workers=0))
    with SampleWriter(tmp / f"samples-{batch_size}-{side}.jsonl") as writer:
        outcome = runner.run(spec, items, {}, writer)
    return summarize_loss(outcome.records).values | {"records": outcome.records}


def test_loss_is_the_same_for_any_batch_size_and_padding_side(
    tiny_loaded: LoadedModel, tmp_path: Path
) -> None:
    path = write_jsonl(tmp_path / "loss.jsonl", conversations(write_images(tmp_path, 5)))
    reference = loss_summary(tiny_loaded, path, tmp_path, 1, "right")
    for batch_size, side in ((2, "right"), (5, "right"), (2, "left"), (5, "left")):
        other = loss_summary(tiny_loaded, path, tmp_path, batch_size, side)
        assert other["n_tokens"] == reference["n_tokens"]
        assert other["nll"] == pytest.approx(reference["nll"], rel=1e-6, abs=0)
    per_sample = [r["nll"] for r in reference["records"]]
    assert len(set(per_sample)) == len(per_sample)  # samples differ, so a mix-up would show


def test_token_weighted_nll_equals_the_training_loss_of_one_batch(tiny_loaded: LoadedModel) -> None:
    tok = tiny_loaded.tokenizer
    dialogs = [
        [Turn("human", "What is it?"), Turn("assistant", "A red square.")],
        [Turn("human", "Hi"), Turn("assistant", "Hello, how can I help you today with your picture?")],
    ]
    examples = [build_training_example(tok, d) for d in dialogs]
    ids, mask, labels = pad_sequences([(e.input_ids, e.labels) for e in examples], 0, "right")
    sums, counts = sequence_logprobs(tiny_loaded.model, ids, mask, labels, None)
    with torch.no_grad():
        out = tiny_loaded.model(input_ids=ids, attention_mask=mask, labels=labels)
    assert sum(counts) == int(out.num_tokens)
    assert -sum(sums) / sum(counts) == pytest.approx(float(out.loss), rel=1e-5)
    weighted = summarize_loss([{"logprob": s, "n_tokens": c} for s, c in zip(sums, counts, strict=True)])
    mean_of_means = sum(-s / c for s, c in zip(sums, counts, strict=True)) / 2
    assert weighted.values["nll"] == pytest.approx(float(out.loss), rel=1e-5)
    assert not math.isclose(
        weighted.values["nll"], mean_of_means, rel_tol=1e-3
    )  # token-, not sample-weighted


def test_continuation_is_scored_from_the_jointly_tokenised_boundary(tiny_loaded: LoadedModel) -> None:
    tok = tiny_loaded.tokenizer
    prompt = f"System\n\n### Human: {IMAGE_PLACEHOLDER}\nWhat colour?\n### Assistant:"
    ids, labels = continuation_sequence(tok, prompt, "dark blue")
    assert ids == tokenize_prompt(tok, prompt + " dark blue")
    scored = [i for i, lab in zip(ids, labels, strict=True) if lab != IGNORE_INDEX]
    assert tok.decode(scored) == " dark blue"
    assert labels[: len(tokenize_prompt(tok, prompt))] == [IGNORE_INDEX] * len(tokenize_prompt(tok, prompt))


def test_the_runner_reuses_the_system_prompt_cache_only_within_one_run(
    tiny_loaded: LoadedModel, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Batches share the system prompt's KV cache; after a weight update (training) it is computed anew."""
    path = write_jsonl(tmp_path / "vqa.jsonl", task_records("vqa", write_images(tmp_path, 6), n=6))
    spec = TaskSpec("vqa", "vqa", path, {"max_new_tokens": 4, "norm": "evalai", "suffix": ""})
    items = build_items("vqa", read_task_file(path), spec.options)
    caches: list[PrefixCache] = []
    real_get = PrefixCache.get

    def spy(self: PrefixCache, *args, **kwargs):
        if self not in caches:
            caches.append(self)
        return real_get(self, *args, **kwargs)

    monkeypatch.setattr(PrefixCache, "get", spy)
    runner = TaskRunner(tiny_loaded, RunOptions(batch_size=2, num_workers=0))
    before = [r["raw_output"] for r in runner.run(spec, items, {}, None).records]
    assert len(caches) == 1 and caches[0].computed == 1  # three batches, one prefix computation
    with torch.no_grad():
        for p in tiny_loaded.model.llm.model.layers[0].parameters():
            p.mul_(1.5)  # as a training step would change the weights
    after = [r["raw_output"] for r in runner.run(spec, items, {}, None).records]
    fresh = TaskRunner(tiny_loaded, RunOptions(batch_size=2, num_workers=0)).run(spec, items, {}, None)
    assert after == [r["raw_output"] for r in fresh.records]
    assert after != before  # the update changed the answers, so a stale cache would have shown
    assert len(caches) == 3 and caches[1].computed == 1
