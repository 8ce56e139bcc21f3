"""Shared helpers of the evaluate.py tests: tiny task files of every type, config composition, and a
socket guard that fails a test on any network use."""

from __future__ import annotations

import json
import socket
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import torch
from hydra import compose, initialize_config_dir
from omegaconf import DictConfig
from PIL import Image

ROOT = Path(__file__).resolve().parents[2]
COLOURS = {"red": (220, 40, 40), "green": (40, 170, 60), "blue": (40, 80, 220), "yellow": (235, 200, 30)}


@pytest.fixture
def no_network(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Internet socket use (connect, DNS lookup) fails the test; Unix sockets (DataLoader) stay allowed."""

    def refuse(*args: Any, **kwargs: Any) -> None:
        pytest.fail(f"network use during evaluation: {args[:2]}")

    real_connect = socket.socket.connect

    def guarded_connect(self: socket.socket, address: Any) -> None:
        if self.family in (socket.AF_INET, socket.AF_INET6):
            refuse(address)
        return real_connect(self, address)

    monkeypatch.setattr(socket.socket, "connect", guarded_connect)
    monkeypatch.setattr(socket, "getaddrinfo", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)
    yield


@pytest.fixture
def one_thread() -> Iterator[None]:
    """One intra-op thread: the tiny model is overhead-bound, and spinning threads slow a shared CPU down."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def write_images(folder: Path, count: int) -> list[str]:
    """``count`` small PNGs of one coloured square each; returns paths relative to ``folder``."""
    (folder / "img").mkdir(parents=True, exist_ok=True)
    names = []
    for i in range(count):
        colour = list(COLOURS.values())[i % len(COLOURS)]
        img = Image.new("RGB", (40 + 8 * (i % 3), 40), (238, 238, 232))
        img.paste(colour, (8, 8, 30, 30))
        name = f"img/{i:03d}.png"
        img.save(folder / name)
        names.append(name)
    return names


def write_jsonl(path: Path, records: list[dict]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in records), encoding="utf-8")
    return path


def task_records(kind: str, images: list[str], n: int = 6) -> list[dict]:
    """``n`` valid records of task type ``kind`` (mme: n/2 images with 2 questions each)."""
    colours = list(COLOURS)
    out = []
    for i in range(n):
        image, colour = images[i % len(images)], colours[i % len(colours)]
        base = {"id": f"{kind}-{i}", "image": image}
        if kind == "vqa":
            rec = {"question": "What colour is the square?", "answers": [colour] * 9 + ["red"]}
            rec["answer_type"] = "other" if i % 2 else "color"
        elif kind == "mcq":
            rec = {"question": "What colour is the square?", "choices": colours, "answer": "ABCD"[i % 4]}
            rec["pair_id"] = f"g{i // 2}"
        elif kind in ("yesno", "pope"):
            rec = {"question": f"Is there a {colour} square?", "answer": "yes" if i % 2 else "no"}
            rec["category"] = "random" if i < n // 2 else "adversarial"
        elif kind == "mme":
            base["image"] = images[i // 2]
            rec = {
                "question": "Is there a square?",
                "answer": "yes" if i % 2 else "no",
                "category": "existence",
            }
        elif kind == "caption":
            rec = {"captions": [f"a {colour} square", f"a {colour} box on a white background"]}
        else:  # loss
            rec = {
                "conversations": [
                    {"from": "human", "value": "<image_placeholder>\nWhat colour is the square?"},
                    {"from": "gpt", "value": colour},
                ]
            }
        out.append(base | rec)
    return out


LONG_TEXT = " ".join(["word"] * 3000)
"""About 6000 tokens: more than the tiny model's context (4096, ``yivl.models.presets.tiny``)."""


def too_long_record(kind: str, images: list[str], record_id: str = "too-long") -> dict:
    """A valid record of ``kind`` whose text alone does not fit the tiny model's context."""
    record = task_records(kind, images, n=1)[0] | {"id": record_id}
    if kind == "loss":
        human = {"from": "human", "value": f"<image_placeholder>\n{LONG_TEXT}"}
        record["conversations"] = [human, *record["conversations"][1:]]
    else:
        record["question"] = f"{LONG_TEXT}\n{record.get('question', 'Describe the picture.')}"
    return record


def eval_config(checkpoint: Path, out_dir: Path, tasks: list, *overrides: str) -> DictConfig:
    """``configs/eval.yaml`` composed with test-friendly settings (no progress bar, no workers)."""
    base = [
        f"checkpoint={checkpoint}",
        f"output_dir={out_dir}",
        "progress=false",
        "threads=null",
        "num_workers=0",
        "bootstrap_iters=20",
        "batch_check=0",
        "chart=false",
        "task_options.vqa.max_new_tokens=3",
        "task_options.mcq.max_new_tokens=3",
        "task_options.yesno.max_new_tokens=3",
        "task_options.mme.max_new_tokens=3",
        "task_options.caption.max_new_tokens=4",
    ]
    with initialize_config_dir(config_dir=str(ROOT / "configs"), version_base="1.3"):
        cfg = compose("eval", overrides=base + list(overrides))
    cfg.tasks = tasks
    return cfg


def without_run_details(summary: dict) -> dict:
    """A summary without what legitimately differs between two runs (timing, date)."""
    return {k: v for k, v in summary.items() if k not in ("timing", "date")}
