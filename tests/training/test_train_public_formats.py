"""train.py on files shaped like LLaVA's mix665k and ShareGPT4V (JSON and converted shards): the image
records are kept, and a source that loses too many records stops before the first step."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from data_tools.cli import main as data_tools
from tests.data.public_formats import mix665k_records, sharegpt4v_records, write_public
from yivl.constants import IMAGE_TOKEN_INDEX
from yivl.errors import YivlError
from yivl.training.run import train

ROOT = Path(__file__).resolve().parents[2]
FEW_STEPS = ["trainer.max_steps=2", "data.num_workers=0", "data.pin_memory=false"]


def json_data(path: Path, images: Path) -> list[str]:
    return [f"data.train.0.path={path}", f"data.train.0.image_folder={images}"]


def test_train_on_a_mix665k_shaped_file_keeps_the_image_records(train_cfg, tmp_path: Path) -> None:
    path = write_public(tmp_path, "llava_v1_5_mix665k.json", mix665k_records())
    result = train(
        train_cfg(*json_data(path, tmp_path / "images"), *FEW_STEPS, out=tmp_path / "run", data="json")
    )
    assert result.trainer.global_step == 2
    datamodule = result.trainer.datamodule
    survey = datamodule.train_survey
    assert (survey.kept, survey.rejected, survey.image_records, survey.image_kept) == (20, {}, 15, 15)
    assert survey.repaired == {"assistant_first_dropped": 2}
    assert datamodule.skip_counts() == {}
    batches = list(datamodule.train_dataloader())
    assert sum(int((b["input_ids"] == IMAGE_TOKEN_INDEX).sum()) for b in batches) == 15


def test_train_on_converted_sharegpt4v_shards(train_cfg, tiny_checkpoint: Path, tmp_path: Path) -> None:
    path = write_public(tmp_path, "share-captioner_coco_lcs_sam_1246k_1107.json", sharegpt4v_records())
    shards = tmp_path / "shards"
    argv = ["convert", str(path), "--image-folder", str(tmp_path / "images"), "--output-dir", str(shards)]
    assert (
        data_tools([*argv, "--model-path", str(tiny_checkpoint), "--processes", "1", "--max-samples", "4"])
        == 0
    )
    cfg = train_cfg(
        f"data.train.0.urls={shards}", *FEW_STEPS, out=tmp_path / "run", data="conversation_shards"
    )
    result = train(cfg)
    assert result.trainer.global_step == 2
    assert result.trainer.datamodule.skip_counts() == {}


def test_too_many_rejects_stop_training_before_the_first_step(train_cfg, tmp_path: Path) -> None:
    records = mix665k_records()
    for record in records[-3:]:  # 3 of 20 text-only records lose their reply
        record["conversations"][-1]["value"] = ""
    path = write_public(tmp_path, "mix.json", records)
    data = [*json_data(path, tmp_path / "images"), *FEW_STEPS]
    with pytest.raises(YivlError) as err:
        train(train_cfg(*data, out=tmp_path / "a", data="json"))
    assert str(err.value) == (
        f"{path}: 3 of 20 records rejected (15.0% > data.max_reject_fraction=0.05), top reasons: "
        "reply_empty=3 (an assistant reply is empty); fix them (`python -m data_tools validate` lists "
        "them) or accept the loss with data.max_reject_fraction=1"
    )
    accepted = train(train_cfg(*data, "data.max_reject_fraction=0.2", out=tmp_path / "b", data="json"))
    assert accepted.trainer.global_step == 2


def test_all_image_records_rejected_is_one_line_and_exit_2(tiny_checkpoint: Path, tmp_path: Path) -> None:
    records = mix665k_records()
    for record in records:
        for turn in record["conversations"]:
            turn["value"] = turn["value"].replace("<image>", "<img>")  # a token nobody listed
    path = write_public(tmp_path, "mix.json", records)
    argv = [sys.executable, "train.py", "data=json", *json_data(path, tmp_path / "images"), *FEW_STEPS]
    argv += [f"model.path={tiny_checkpoint}", "model.build_if_missing=false", "trainer.accelerator=cpu"]
    argv += ["trainer.precision=32-true", f"hydra.run.dir={tmp_path / 'run'}", "data.max_reject_fraction=1"]
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    done = subprocess.run(argv, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 2 and "Traceback" not in done.stderr
    errors = [line for line in done.stderr.splitlines() if line.startswith("error:")]
    assert errors == [
        f"error: {path}: all 15 image records were rejected, top reasons: placeholder_missing=15 (an image "
        "but none of the image tokens; add its token to image_tokens or --image-tokens); fix the records, "
        "the image folder or image_tokens (`python -m data_tools validate` lists them)"
    ]
