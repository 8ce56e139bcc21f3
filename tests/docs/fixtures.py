"""The files the documented commands name, generated small in a copy of the project (nothing downloaded).

Relative paths are the docs' own (``llava_v1_5_mix665k.json``, ``data/pope/random.jsonl``, ``MME.tsv``);
the docs' absolute ``/models/...`` and ``/data/...`` live in the copy's ``models/`` and ``data/``
(``doc_commands.REWRITES``). ``/models/Yi-VL-6B`` and ``/models/Yi-VL-34B`` hold the tiny model.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

from PIL import Image

from tests.checkpoint.peft_adapters import make_llm_adapter
from tests.data.img2dataset_layout import write_shard
from tests.data.public_formats import llava_instruct_records, mix665k_records, write_public
from tests.evaluation.benchmark_files import mcq_files, open_files, shape_images, yesno_files
from tests.evaluation.task_files import task_records, write_images, write_jsonl
from yivl.checkpoint.tiny import build_tiny_checkpoint

SETUP = [
    # stage 2's second source in docs/training.md: conversation shards of VQA data
    "python -m data_tools convert data/vqa.json --image-folder data/images --model-path /models/Yi-VL-6B "
    "--output-dir /data/vqa_shards",
]
"""Commands run before the documented ones, to make inputs that only a yivl tool writes."""


def copy_project(src: Path, dst: Path) -> None:
    """The tracked and untracked-but-not-ignored files of ``src`` (no logs, caches, data)."""
    listed = subprocess.run(
        ["git", "ls-files", "-co", "--exclude-standard"], cwd=src, check=True, capture_output=True, text=True
    ).stdout.splitlines()
    for name in listed:
        if (src / name).is_file():
            (dst / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src / name, dst / name)


def _laion(folder: Path, shards: int) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for shard in range(shards):
        # 72 x 64 px: above the --min-image-side 64 that docs/data.md filters with
        write_shard(folder, shard, [f"a red picture number {shard}-{i}" for i in range(6)], size=(72, 64))


def _conversations(folder: Path, name: str) -> None:
    """``folder/name``: LLaVA-format records over images in ``folder/images``."""
    records = mix665k_records()
    write_public(folder, name, records)


def _evaluation_files(work: Path) -> None:
    data = work / "data"
    images = write_images(work, 4)
    write_jsonl(work / "vqav2_val.jsonl", task_records("vqa", images))
    write_jsonl(work / "pope_random.jsonl", task_records("pope", images))
    write_jsonl(work / "mmbench_dev.jsonl", task_records("mcq", images))
    data_images = write_images(data, 4)
    write_jsonl(data / "vqav2_val.jsonl", task_records("vqa", data_images))
    write_jsonl(data / "pope_random.jsonl", task_records("pope", data_images))
    write_jsonl(data / "mmbench_dev.jsonl", task_records("mcq", data_images))
    write_jsonl(data / "mmbench.jsonl", task_records("mcq", data_images))
    pope_images = write_images(data / "pope", 4)
    write_jsonl(data / "pope" / "random.jsonl", task_records("pope", pope_images))
    write_jsonl(data / "pope" / "adversarial.jsonl", task_records("pope", pope_images))
    shapes = shape_images(work, 4)
    yesno_files(work, shapes, "mme")
    shutil.move(yesno_files(work, shapes, "pope")["parquet"], work / "POPE.parquet")
    mcq_files(work, shapes, "mmbench")
    shutil.copy(work / "MMBench_DEV_EN.tsv", work / "mmb.tsv")
    mcq_files(work, shapes, "seedbench")
    gqa = open_files(work, shapes)
    shutil.move(gqa["gqa"], work / "testdev_balanced_instructions.parquet")
    shutil.move(gqa["gqa_images"], work / "testdev_balanced_images.parquet")


def _inference_files(work: Path) -> None:
    Image.new("RGB", (64, 48), (200, 120, 40)).save(work / "cat.jpg")
    questions = [{"id": f"q{i}", "image": "cat.jpg", "question": "What colour is it?"} for i in range(2)]
    (work / "questions.jsonl").write_text("".join(json.dumps(q) + "\n" for q in questions))


def write_fixtures(work: Path) -> None:
    """Every input the runnable documented commands read, under the project copy ``work``."""
    tiny = build_tiny_checkpoint(work / "models" / "Yi-VL-6B", seed=0)
    shutil.copytree(tiny, work / "models" / "Yi-VL-34B")
    make_llm_adapter(tiny, work / "my-lora")
    for name in ("laion400m", "laion", "laion20m"):
        _laion(work / "data" / name, shards=2)
    # README: train.json / llava_v1_5_mix665k.json with images/ in the working directory
    for name in ("llava_v1_5_mix665k.json", "train.json"):
        _conversations(work, name)
    # docs/data.md, docs/training.md: data/llava_v1_5_mix665k.json, /data/instruct.json over data/images
    for name in ("llava_v1_5_mix665k.json", "instruct.json", "extra.json", "train.json", "vqa.json"):
        _conversations(work / "data", name)
    # docs/data.md: llava_instruct_150k.json, its image names relative to data/images/coco/train2017
    write_public(work / "data", "../llava_instruct_150k.json", llava_instruct_records(), "coco/train2017")
    shutil.copytree(work / "data" / "images", work / "data" / "llava" / "images")
    _evaluation_files(work)
    _inference_files(work)
