"""train.py end to end on the tiny model: every experiment, the export, the loss drop, bad input."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from yivl.checkpoint.export import main as export_main
from yivl.checkpoint.load import load_pretrained
from yivl.errors import YivlError
from yivl.training.callbacks import LossPlot
from yivl.training.run import train

ROOT = Path(__file__).resolve().parents[2]
SHORT = ["trainer.max_steps=3", "trainer.limit_val_batches=1", "trainer.val_check_interval=3"]


@pytest.mark.parametrize("experiment", ["stage1", "stage2", "stage3", "lora", "qlora"])
def test_fast_dev_run_for_every_experiment(train_cfg, experiment: str) -> None:
    result = train(train_cfg(f"experiment={experiment}", "debug=fdr"))
    assert result.trainer.global_step == 1
    assert result.export_dir is None  # fast_dev_run exports nothing
    expected = {"stage1": 224, "stage2": 448, "stage3": 448, "lora": 448, "qlora": 448}[experiment]
    assert result.module.model.config.image_size == expected


def batch_of(result) -> dict[str, torch.Tensor]:
    return next(iter(result.trainer.datamodule.val_dataloader()))


@pytest.mark.parametrize("experiment", ["stage3", "lora"])
def test_export_loads_and_gives_the_module_logits(train_cfg, tmp_path: Path, experiment: str) -> None:
    result = train(train_cfg(f"experiment={experiment}", "module.image_size=null", *SHORT, out=tmp_path))
    assert result.export_dir == tmp_path / "export"
    exported = load_pretrained(result.export_dir, dtype=torch.float32).model
    batch = batch_of(result)
    inputs = {k: v for k, v in batch.items() if k != "labels"}
    module_model = result.module.model.eval()
    with torch.no_grad():
        torch.testing.assert_close(
            exported(**inputs).logits, module_model(**inputs).logits, atol=1e-5, rtol=1e-5
        )
    assert not any("lora" in n for n, _ in exported.named_parameters())


def test_qlora_export_merges_into_the_full_precision_base(
    train_cfg, tiny_checkpoint: Path, tmp_path: Path
) -> None:
    lora = ["finetune.lora.r=4", "finetune.lora.alpha=8"]
    result = train(train_cfg("experiment=qlora", "module.image_size=null", *lora, *SHORT, out=tmp_path))
    exported = load_pretrained(result.export_dir, dtype=torch.float32).model
    base = load_pretrained(tiny_checkpoint, dtype=torch.float32).model
    trained = dict(result.module.model.named_parameters())
    q_proj = "llm.model.layers.0.self_attn.q_proj"
    a, b = trained[f"{q_proj}.lora_A.default.weight"], trained[f"{q_proj}.lora_B.default.weight"]
    assert b.abs().sum() > 0  # the adapter trained
    want = base.get_parameter(f"{q_proj}.weight") + (8 / 4) * b.detach() @ a.detach()
    torch.testing.assert_close(exported.get_parameter(f"{q_proj}.weight"), want, atol=1e-6, rtol=1e-5)
    for name, param in exported.mm_projector.named_parameters():
        torch.testing.assert_close(param, trained[f"mm_projector.{name}"].detach())


def test_adapter_export_and_the_export_command(train_cfg, tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    result = train(
        train_cfg("experiment=lora", "module.image_size=null", "export.merge=false", *SHORT, out=run_dir)
    )
    adapter = result.export_dir
    assert {"adapter_config.json", "adapter_model.safetensors", "trainables.safetensors"} <= {
        p.name for p in adapter.iterdir()
    }
    assert export_main([str(adapter), str(tmp_path / "from_adapter")]) == 0
    assert export_main([str(run_dir / "checkpoints" / "last.ckpt"), str(tmp_path / "from_ckpt")]) == 0
    batch = batch_of(result)
    inputs = {k: v for k, v in batch.items() if k != "labels"}
    with torch.no_grad():
        want = result.module.model.eval()(**inputs).logits
        for folder in ("from_adapter", "from_ckpt"):
            got = load_pretrained(tmp_path / folder, dtype=torch.float32).model(**inputs).logits
            torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-5)


def test_loss_falls_on_the_synthetic_data(train_cfg, tmp_path: Path) -> None:
    cfg = train_cfg(
        "data.batch_size=8",
        "global_batch_size=8",
        "module.optimizer.lr=2e-3",
        "trainer.max_steps=40",
        "export.enabled=false",
        "trainer.limit_val_batches=1",
        out=tmp_path,
    )
    result = train(cfg)
    plot = tmp_path / "csv" / "loss.png"
    assert plot.stat().st_size > 1000
    curve = next(cb for cb in result.trainer.callbacks if isinstance(cb, LossPlot))
    losses = [loss for _, loss in curve.train]
    assert losses[0] > 5.0 and min(losses[-4:]) < losses[0] / 2


def test_a_dataset_without_supervised_tokens_is_refused(train_cfg, tmp_path: Path) -> None:
    """Read in a DataLoader worker: the one-line message survives the trip to the main process."""
    records = tmp_path / "empty.jsonl"
    records.write_text(
        '{"conversations": [{"from": "human", "value": "hi"}, {"from": "gpt", "value": ""}]}\n' * 40
    )
    paths = [f"data.train.0.path={records}", f"data.train.0.image_folder={tmp_path}", "data.num_workers=1"]
    # max_reject_fraction=1 gets past the survey before training, so the worker's own error is what stops
    cfg = train_cfg(*paths, "data.max_reject_fraction=1", out=tmp_path, data="json")
    with pytest.raises(
        YivlError, match=r"records in a row .* were rejected \(skips so far: \{'reply_empty'"
    ) as err:
        train(cfg)
    assert "\n" not in str(err.value)


def test_a_checkpoint_of_another_size_or_an_earlier_export_is_refused(train_cfg, tmp_path: Path) -> None:
    wrong_size = train_cfg("model=yi_vl_6b", "experiment=stage3", out=tmp_path / "a")
    with pytest.raises(
        YivlError, match=r"model=yi_vl_6b expects an LLM of hidden size 4096 and 32 layers.*\(tiny\)"
    ):
        train(wrong_size)
    (tmp_path / "b" / "export").mkdir(parents=True)
    (tmp_path / "b" / "export" / "config.json").write_text("{}")
    with pytest.raises(YivlError, match="already holds an earlier run's export"):
        train(train_cfg(out=tmp_path / "b"))


def run_cli(*args: str, cwd: Path = ROOT) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.run(
        [sys.executable, *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=600
    )


def test_bad_input_is_one_line_and_a_non_zero_exit(tmp_path: Path) -> None:
    unknown = run_cli("train.py", "experiment=stage9")
    assert unknown.returncode == 2
    assert (
        unknown.stderr.strip()
        == "error: unknown experiment=stage9; valid options: lora, qlora, stage1, stage2, stage3"
    )
    missing = run_cli(
        "train.py",
        "model=yi_vl_6b",
        "experiment=stage3",
        f"model.path={tmp_path / 'nope'}",
        f"hydra.run.dir={tmp_path}",
    )
    assert missing.returncode == 2
    lines = [line for line in missing.stderr.splitlines() if line.startswith("error:")]
    assert len(lines) == 1 and "base model not found" in lines[0] and "Traceback" not in missing.stderr


@pytest.mark.slow
def test_default_job_beats_chance(tiny_checkpoint: Path, tmp_path: Path) -> None:
    """`python train.py` as a new user runs it (tiny model, 2000 synthetic samples, CPU), then evaluate.py."""
    data = [f"paths.data_dir={tmp_path / 'data'}", f"model.path={tiny_checkpoint}"]
    trained = run_cli("train.py", f"hydra.run.dir={tmp_path / 'run'}", *data)
    assert trained.returncode == 0, trained.stderr[-2000:]
    assert (tmp_path / "run" / "csv" / "loss.png").is_file()
    out = tmp_path / "eval"
    evaluated = run_cli(
        "evaluate.py",
        "eval=synthetic",
        f"checkpoint={tmp_path / 'run' / 'export'}",
        f"output_dir={out}",
        *data[:1],
    )
    assert evaluated.returncode == 0, evaluated.stderr[-2000:]
    tasks = json.loads((out / "summary.json").read_text())["tasks"]
    assert tasks["yesno"]["accuracy"] > tasks["yesno"]["chance"]["accuracy"] + 5
    assert tasks["mcq"]["acc_sum"] > tasks["mcq"]["chance"]["acc_sum"] + 20
    assert tasks["vqa"]["accuracy"] > 55  # the per-question majority answer scores about 43 on this split
