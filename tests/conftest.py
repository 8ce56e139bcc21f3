"""Fixtures shared by every test package: the tiny random Yi-VL checkpoint, on disk and loaded."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from yivl.checkpoint.load import LoadedModel, load_pretrained
from yivl.checkpoint.tiny import build_tiny_checkpoint


@pytest.fixture(scope="session")
def tiny_checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny random Yi-VL in the published layout (safetensors shards + index), built once per session.

    Read-only: tests that change files must copy it first (``shutil.copytree``).
    """
    return build_tiny_checkpoint(tmp_path_factory.mktemp("tiny") / "yi-vl-tiny", seed=0)


@pytest.fixture
def tiny_loaded(tiny_checkpoint: Path) -> LoadedModel:
    """The tiny checkpoint loaded in fp32 on CPU (eval mode); a fresh copy per test, free to modify."""
    return load_pretrained(tiny_checkpoint, dtype=torch.float32)
