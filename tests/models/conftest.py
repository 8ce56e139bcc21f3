"""Shared fixtures for the model tests: a tiny random YiVL, random images and a stub tokenizer."""

from __future__ import annotations

from collections.abc import Sequence

import pytest
import torch

from yivl.models.config import YiVLConfig
from yivl.models.presets import preset
from yivl.models.yivl import YiVL


class StubTokenizer:
    """Decodes each id to a fixed piece of text; ids 0-2 (unk/bos/eos) are special and decode to ""."""

    eos_token_id = 2
    pad_token_id = 0
    pieces = ("#", " ", "ab", "c", "##", "d e", "f", "g")

    def decode(self, ids: Sequence[int], skip_special_tokens: bool = True) -> str:
        """Concatenate the pieces of ``ids``."""
        return "".join(self.pieces[i % len(self.pieces)] for i in ids if i > 2 or not skip_special_tokens)


@pytest.fixture(scope="session")
def tiny_config() -> YiVLConfig:
    return preset("tiny")


@pytest.fixture(scope="session")
def tiny_model(tiny_config: YiVLConfig) -> YiVL:
    """Random tiny model in eval mode, fp32; tests must not modify it."""
    torch.manual_seed(0)
    return YiVL(tiny_config).eval()


@pytest.fixture
def images(tiny_config: YiVLConfig) -> torch.Tensor:
    """Four random images [4, 3, S, S]."""
    size = tiny_config.image_size
    return torch.randn(4, 3, size, size, generator=torch.Generator().manual_seed(1))


@pytest.fixture
def stub_tokenizer() -> StubTokenizer:
    return StubTokenizer()
