"""The optional generation task of train.py's validation: evaluate.py's task and metric, logged as val/..."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest
import torch

from tests.evaluation.task_files import eval_config
from yivl.data.synthetic import ensure_synthetic_dataset
from yivl.errors import YivlError
from yivl.evaluation.registry import build_items
from yivl.evaluation.run import run as evaluate
from yivl.evaluation.runner import RunOptions, TaskRunner
from yivl.evaluation.sources import read_task_file
from yivl.evaluation.tasks import TaskSpec
from yivl.evaluation.val_generation import ValidationGeneration, gather_records
from yivl.training.run import Trained, train

ONE_VALIDATION = ["trainer.max_steps=1", "trainer.limit_val_batches=1", "trainer.val_check_interval=1"]
TASK = ["val_generation=synthetic", "val_generation.limit=6", "val_generation.batch_size=4"]


def logged(run_dir: Path, key: str) -> list[float]:
    """The values of ``key`` in the run's metrics.csv, in order."""
    with open(run_dir / "csv" / "metrics.csv", newline="") as f:
        return [float(row[key]) for row in csv.DictReader(f) if row.get(key)]


def callback(result: Trained) -> ValidationGeneration:
    return next(cb for cb in result.trainer.callbacks if isinstance(cb, ValidationGeneration))


def test_validation_logs_evaluate_py_s_metric_and_answers(train_cfg, data_dir: Path, tmp_path: Path) -> None:
    # a tiny learning rate keeps the random model's varied answers, so equal answers mean something
    cfg = train_cfg(*TASK, *ONE_VALIDATION, "module.optimizer.lr=1e-7", out=tmp_path / "run")
    result = train(cfg)
    (accuracy,) = logged(tmp_path / "run", "val/vqa/accuracy")
    assert 0.0 <= accuracy <= 100.0 and result.metric("val/vqa/accuracy") == pytest.approx(accuracy)
    during = callback(result).last_records
    assert len(during) == 6 and any(r["raw_output"] for r in during)

    task = {"name": "vqa", "type": "vqa", "path": str(data_dir / "synthetic" / "eval_vqa.jsonl")}
    task |= {"limit": 6, "max_new_tokens": 8}
    eval_cfg = eval_config(result.export_dir, tmp_path / "eval", [task], "batch_size=4")
    eval_cfg.task_options.vqa.max_new_tokens = 16  # the task entry's budget (8) must win, as in training
    summary = evaluate(eval_cfg)
    assert summary["tasks"]["vqa"]["accuracy"] == pytest.approx(accuracy)
    lines = (tmp_path / "eval" / "samples_vqa.jsonl").read_text().splitlines()
    after = {r["id"]: r for r in map(json.loads, lines)}
    for record in during:
        assert record["raw_output"] == after[record["id"]]["raw_output"]
        assert record["prompt"] == after[record["id"]]["prompt"]

    rng = torch.get_rng_state()
    callback(result).run(result.trainer, result.module.model)
    assert torch.equal(rng, torch.get_rng_state())  # training draws the same random numbers with it or not


def test_without_validation_data_it_runs_at_every_nth_epoch_end(train_cfg, tmp_path: Path) -> None:
    epochs = [
        "trainer.max_steps=-1",
        "trainer.max_epochs=2",
        "trainer.limit_train_batches=1",
        "export.enabled=false",
    ]
    result = train(train_cfg(*TASK, "data.val=[]", "val_generation.every_n=2", *epochs, out=tmp_path / "run"))
    assert callback(result).runs == 2 and result.metric("val/loss") is None
    assert len(logged(tmp_path / "run", "val/vqa/accuracy")) == 1  # the second epoch only


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (
            ["val_generation.type=vqq"],
            r"val_generation\.type=vqq is not a generation task type; use one of vqa",
        ),
        (["val_generation.type=loss"], "the loss task already runs as val/loss"),
        (["val_generation.type=vqa"], r"needs a task file: set val_generation\.path=FILE"),
        (
            ["val_generation=synthetic", "val_generation.limit=0"],
            r"val_generation\.limit=0 must be a positive",
        ),
        (
            ["val_generation=synthetic", "val_generation.path=/nowhere/vqa.jsonl"],
            r"val_generation\.path=/nowhere/vqa\.jsonl not found; give a vqa task file .*=none",
        ),
    ],
)
def test_a_bad_task_config_is_one_line_naming_the_fix(
    train_cfg, tmp_path: Path, overrides: list[str], message: str
) -> None:
    with pytest.raises(YivlError, match=message) as err:
        train(train_cfg("val_generation=none", *overrides, *ONE_VALIDATION, out=tmp_path / "run"))
    assert "\n" not in str(err.value)


def test_shares_of_the_batches_gathered_equal_the_whole_task(tiny_loaded, data_dir: Path) -> None:
    """What DDP ranks compute between them: every batch once, the same batches as one process."""
    path = ensure_synthetic_dataset(data_dir / "synthetic", 48, 8) / "eval_vqa.jsonl"  # as SMALL_DATA
    options = {"max_new_tokens": 3, "norm": "evalai", "suffix": "\nAnswer the question using a single word."}
    spec = TaskSpec("vqa", "vqa", path, options)
    items = build_items("vqa", read_task_file(path), options)
    runner = TaskRunner(tiny_loaded, RunOptions(batch_size=2, num_workers=0))
    whole = runner.run(spec, items, {}, None).records
    shares = [runner.run(spec, items, {}, None, share=(rank, 3)).records for rank in range(3)]
    assert all(shares) and sum(len(s) for s in shares) == len(whole) == len(items)
    merged = gather_records([r for share in reversed(shares) for r in share], world_size=1)
    strip = ("batch_s",)
    assert [{k: v for k, v in r.items() if k not in strip} for r in merged] == [
        {k: v for k, v in r.items() if k not in strip} for r in whole
    ]


@pytest.mark.slow
def test_under_ddp_the_ranks_share_the_batches_and_log_the_whole_task(
    tiny_checkpoint: Path, data_dir: Path, tmp_path: Path
) -> None:
    """Two CPU processes (trainer=ddp_sim): the gathered metric equals evaluate.py's on the export."""
    from tests.training.test_sweeps import small_run, train_py

    run_dir = tmp_path / "ddp"
    settings = ["val_generation.limit=6", "val_generation.batch_size=2", "module.optimizer.lr=1e-7"]
    train_py(
        *small_run(tiny_checkpoint, data_dir),
        "trainer=ddp_sim",
        "strategy=ddp",
        "global_batch_size=4",
        *settings,
        f"hydra.run.dir={run_dir}",
        timeout=900,
    )
    (accuracy,) = logged(run_dir, "val/vqa/accuracy")
    task = {"name": "vqa", "type": "vqa", "path": str(data_dir / "synthetic" / "eval_vqa.jsonl")}
    task |= {"limit": 6, "max_new_tokens": 8}
    summary = evaluate(eval_config(run_dir / "export", tmp_path / "eval", [task], "batch_size=2"))
    assert summary["tasks"]["vqa"]["accuracy"] == pytest.approx(accuracy)
