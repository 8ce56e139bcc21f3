"""Fixtures for the checkpoint tests: the tiny model in the release's .bin format, and writable copies."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from yivl.checkpoint.tiny import build_tiny_checkpoint


@pytest.fixture(scope="session")
def tiny_bin_checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny model (seed 0) as pytorch_model-*.bin shards + index and vit/<name>/pytorch_model.bin."""
    return build_tiny_checkpoint(tmp_path_factory.mktemp("tiny-bin") / "m", seed=0, weight_format="bin")


@pytest.fixture
def tiny_copy(tiny_checkpoint: Path, tmp_path: Path) -> Path:
    """A writable copy of the tiny safetensors checkpoint."""
    return Path(shutil.copytree(tiny_checkpoint, tmp_path / "model"))
