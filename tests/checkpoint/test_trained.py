"""A training result on its base model: one image processor for training, export, evaluation and serving."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch

from tests.checkpoint.helpers import train_py_hparams
from yivl.checkpoint.exporter import export_source
from yivl.checkpoint.layout import read_config
from yivl.checkpoint.load import load_pretrained
from yivl.checkpoint.plan import RunPlan
from yivl.checkpoint.trained import model_from_plan
from yivl.data.images import CLIP_MEAN, CLIP_STD, PREPROCESSOR_CONFIG, ImageProcessor
from yivl.errors import YivlError
from yivl.evaluation.checkpoints import describe_checkpoint, load_checkpoint
from yivl.serving.engine import Engine
from yivl.training.data import model_inputs


def stage1_checkpoint(tiny_checkpoint: Path, tmp_path: Path, resample: int) -> tuple[Path, Path]:
    """(base, .ckpt): a base whose processor resamples with ``resample``; a 56 px run that trained the
    projector, saved as train.py saves it."""
    base = Path(shutil.copytree(tiny_checkpoint, tmp_path / "base"))
    vit = read_config(base)[1] / PREPROCESSOR_CONFIG
    vit.write_text(json.dumps({**json.loads(vit.read_text()), "resample": resample}))
    projector = load_pretrained(base).model.mm_projector.state_dict()
    state = {f"model.mm_projector.{k}": v + 0.5 for k, v in projector.items()}
    train = {"vision_tower": False, "projector": True, "llm": "frozen"}
    hparams = train_py_hparams(base, stage="stage1", train=train, image_size=56)
    torch.save({"hyper_parameters": hparams, "state_dict": state}, tmp_path / "last.ckpt")
    return base, tmp_path / "last.ckpt"


@pytest.mark.parametrize("resample", [3, 2])  # the release's bicubic, and a base that says bilinear
def test_train_export_eval_and_serve_use_one_processor(tiny_checkpoint: Path, tmp_path: Path, resample: int):
    base, ckpt = stage1_checkpoint(tiny_checkpoint, tmp_path, resample)
    config, vit_dir = read_config(base)
    plan = RunPlan.from_dict(torch.load(ckpt, weights_only=True)["hyper_parameters"])
    out = export_source(ckpt, tmp_path / "export", True, None, "float32")
    processors = {
        "train": model_inputs(base, vit_dir, config, plan.image_size).image_processor,
        "export": ImageProcessor.from_pretrained(read_config(out)[1]),
        "eval ckpt": load_checkpoint(
            describe_checkpoint(ckpt, None, False), torch.device("cpu"), torch.float32
        ).image_processor,
        "eval export": load_pretrained(out).image_processor,
        "serve": Engine.from_path(out, device="cpu", dtype="float32").image_processor,
    }
    want = ImageProcessor(56, CLIP_MEAN, CLIP_STD, resample=resample)
    assert processors == dict.fromkeys(processors, want)
    assert processors["serve"].resample == resample and processors["serve"].resize_size == 56


def test_an_exports_preprocessor_config_round_trips(tiny_checkpoint: Path, tmp_path: Path) -> None:
    _, ckpt = stage1_checkpoint(tiny_checkpoint, tmp_path, 3)
    vit = read_config(export_source(ckpt, tmp_path / "export", True, None, "float32"))[1]
    written = json.loads((vit / PREPROCESSOR_CONFIG).read_text())
    assert (written["crop_size"], written["size"], written["resample"]) == (
        {"height": 56, "width": 56},
        {"shortest_edge": 56},
        3,
    )
    ImageProcessor.from_pretrained(vit).save_pretrained(tmp_path / "again")
    assert (tmp_path / "again" / PREPROCESSOR_CONFIG).read_bytes() == (vit / PREPROCESSOR_CONFIG).read_bytes()


def test_model_from_plan_sets_the_resolution_and_loads_the_trained_tensors(
    tiny_checkpoint: Path, tmp_path: Path
) -> None:
    _, ckpt = stage1_checkpoint(tiny_checkpoint, tmp_path, 3)
    plan = RunPlan.from_dict(torch.load(ckpt, weights_only=True)["hyper_parameters"])
    trained = {
        k.removeprefix("model."): v for k, v in torch.load(ckpt, weights_only=True)["state_dict"].items()
    }
    loaded = model_from_plan(plan, trained)
    assert loaded.model.config.image_size == 56 and loaded.image_processor.size == 56
    assert loaded.model.vision_tower.clip.embeddings.position_embedding.weight.shape[0] == 1 + 4 * 4
    assert {n for n, p in loaded.model.named_parameters() if p.requires_grad} == set(trained)
    for name, param in loaded.model.named_parameters():
        if name in trained:
            assert torch.equal(param, trained[name]), name
    wrong = {"mm_projector.0.weight": torch.zeros(3, 3)}
    with pytest.raises(
        YivlError, match=r"^trained tensor mm_projector.0.weight \[3, 3\] does not fit the base"
    ):
        model_from_plan(plan, wrong)
