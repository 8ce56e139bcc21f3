"""Fixtures for the data tests: the tiny tokenizer, trained once per session."""

from __future__ import annotations

from pathlib import Path

import pytest

from yivl.checkpoint.tiny_tokenizer import train_tiny_tokenizer
from yivl.data.tokenizer import YiTokenizer


@pytest.fixture(scope="session")
def tiny_tokenizer_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A directory holding the tiny tokenizer's files."""
    out = tmp_path_factory.mktemp("tiny_tokenizer")
    train_tiny_tokenizer(out)
    return out


@pytest.fixture(scope="session")
def tokenizer(tiny_tokenizer_dir: Path) -> YiTokenizer:
    """The tiny tokenizer, loaded."""
    return YiTokenizer.from_dir(tiny_tokenizer_dir)
