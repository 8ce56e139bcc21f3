"""Helpers for the checkpoint tests: copy a checkpoint, rewrite its main weights, run the model."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import torch
from safetensors.torch import load_file

from yivl.checkpoint.writer import spec_of, write_weights
from yivl.constants import IMAGE_TOKEN_INDEX
from yivl.models.yivl import YiVL

PROMPT = [5, 17, 23, 301, IMAGE_TOKEN_INDEX, 44, 9, 100, 7]
"""Token ids of one image prompt (the image after a few text tokens, text after it)."""


def main_tensors(model_dir: Path) -> dict[str, torch.Tensor]:
    """Every tensor of a safetensors model directory's main shards, read whole (tests only)."""
    tensors: dict[str, torch.Tensor] = {}
    for file in sorted(model_dir.glob("model*.safetensors")):
        tensors.update(load_file(file))
    return tensors


def rewrite_main(model_dir: Path, mutate: Callable[[dict[str, torch.Tensor]], None]) -> None:
    """Replace a safetensors model directory's main shards with ``mutate``d tensors (2 shards + index)."""
    tensors = main_tensors(model_dir)
    mutate(tensors)
    for stale in [*model_dir.glob("model*.safetensors"), model_dir / "model.safetensors.index.json"]:
        stale.unlink(missing_ok=True)
    total = sum(t.nbytes for t in tensors.values())
    specs = [spec_of(key, t) for key, t in tensors.items()]
    write_weights(specs, tensors.__getitem__, model_dir, "safetensors", max_shard_bytes=total // 2 + 1)


def edit_config(model_dir: Path, **changes: object) -> None:
    """Set (or, with value None, delete) keys of ``model_dir/config.json``."""
    path = model_dir / "config.json"
    config = json.loads(path.read_text())
    for key, value in changes.items():
        if value is None:
            config.pop(key, None)
        else:
            config[key] = value
    path.write_text(json.dumps(config))


def pixels(size: int, seed: int = 0) -> torch.Tensor:
    """One random normalized image [1, 3, size, size]."""
    return torch.randn(1, 3, size, size, generator=torch.Generator().manual_seed(seed))


@torch.no_grad()
def prompt_logits(model: YiVL, image: torch.Tensor) -> torch.Tensor:
    """Our model's logits [1, L, V] for PROMPT with ``image``."""
    ids = torch.tensor([PROMPT])
    return model(ids, torch.ones_like(ids), pixel_values=image).logits


OPTIMIZER = {
    "lr": 5e-4,
    "vision_tower_lr": 5e-4,
    "projector_lr": 5e-4,
    "weight_decay": 0.0,
    "betas": [0.9, 0.999],
    "eps": 1e-8,
}


def train_py_hparams(
    base: Path,
    stage: str = "demo",
    train: dict | None = None,
    finetune: dict | None = None,
    image_size: int | None = None,
    optimizer: dict | None = None,
    gradient_checkpointing: dict | None = None,
) -> dict:
    """A .ckpt's ``hyper_parameters`` in the layout train.py writes (``image_size`` null: the base's)."""
    return {
        "model": {"name": "tiny", "path": str(base)},
        "stage": stage,
        "image_size": image_size,
        "train": train or {"vision_tower": True, "projector": True, "llm": "full"},
        "finetune": finetune or {"method": "full"},
        "optimizer": optimizer or OPTIMIZER,
        "scheduler": {"warmup_ratio": 0.03, "min_lr_ratio": 0.1},
        "gradient_checkpointing": gradient_checkpointing or {"llm": False, "vision_tower": False},
        "precision": "32-true",
        "cpu_adam": False,
    }
