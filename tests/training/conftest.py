"""Fixtures for the training tests: composed train.py configs on the tiny model and a small synthetic set."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from omegaconf import DictConfig

CONFIG_DIR = Path(__file__).resolve().parents[2] / "configs"
SMALL_DATA = [
    f"data.{split}.0.{key}={n}"
    for split in ("train", "val")
    for key, n in (("num_train", 48), ("num_val", 8))
]


@pytest.fixture(scope="session")
def data_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Where the small synthetic dataset is generated (once per session)."""
    return tmp_path_factory.mktemp("data")


def compose_train(overrides: list[str]) -> DictConfig:
    """``configs/train.yaml`` composed with ``overrides`` (as on the command line)."""
    with initialize_config_dir(str(CONFIG_DIR), version_base="1.3"):
        return compose("train", overrides=overrides)


def make_train_cfg(
    tiny_checkpoint: Path, data_dir: Path, out: Path, overrides: tuple[str, ...], data: str = "synthetic"
) -> DictConfig:
    """A CPU config on the tiny model; with ``data="synthetic"`` 48 samples. Batches of 2, global batch 2."""
    base = [
        f"model.path={tiny_checkpoint}",
        "model.build_if_missing=false",
        f"paths.data_dir={data_dir}",
        f"paths.output_dir={out}",
        f"data={data}",
        "data.batch_size=2",
        "global_batch_size=2",
        "trainer.accelerator=cpu",
        "trainer.precision=32-true",
        "extras.print_config=false",
        *(SMALL_DATA if data == "synthetic" else []),
    ]
    return compose_train([*base, *overrides])


@pytest.fixture
def train_cfg(tiny_checkpoint: Path, data_dir: Path, tmp_path: Path) -> Callable[..., DictConfig]:
    """``train_cfg(*overrides, out=None, data="synthetic")``: see :func:`make_train_cfg`.

    The experiment's own data choice is replaced by ``data``.
    """

    def make(*overrides: str, out: Path | None = None, data: str = "synthetic") -> DictConfig:
        return make_train_cfg(tiny_checkpoint, data_dir, out or tmp_path / "run", overrides, data)

    return make
