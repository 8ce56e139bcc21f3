"""Start-up report: the composed config as a rich tree, and Lightning's console messages printed once."""

from __future__ import annotations

import logging

from omegaconf import DictConfig, OmegaConf
from rich import print as rich_print
from rich.syntax import Syntax
from rich.tree import Tree

ORDER = (
    "model",
    "module",
    "finetune",
    "data",
    "trainer",
    "strategy",
    "callbacks",
    "logger",
    "export",
    "paths",
)


def print_config(cfg: DictConfig) -> None:
    """Print each top-level key of ``cfg`` as a branch holding its YAML (interpolations resolved)."""
    tree = Tree("config", guide_style="dim")
    keys = [k for k in ORDER if k in cfg] + [k for k in cfg if k not in ORDER and k != "hydra"]
    for key in keys:
        node = cfg[key]
        text = OmegaConf.to_yaml(node, resolve=True) if isinstance(node, DictConfig) else str(node)
        tree.add(key, style="bold").add(
            Syntax(text.rstrip(), "yaml", theme="ansi_dark", background_color="default")
        )
    rich_print(tree)


class _DropAdverts(logging.Filter):
    """Lightning advertises its cloud logger at start-up; that is noise in a training log."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "litlogger" not in record.getMessage().lower()


def quiet_lightning_logging() -> None:
    """Print Lightning's messages once: through Hydra's handlers (console + run log) when they exist.

    ``import lightning`` attaches its own console handler; under Hydra, whose root handlers also get the
    records, every message would appear twice.
    """
    if logging.getLogger().handlers:
        logging.getLogger("lightning").handlers.clear()
    logging.getLogger("lightning.pytorch.utilities.rank_zero").addFilter(_DropAdverts())
