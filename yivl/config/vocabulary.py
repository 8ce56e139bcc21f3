"""One vocabulary for the four tools: the old spellings each still accepts, with a one-line notice.

The names (docs/cli.md): ``model.path`` / ``--model-path`` for the model directory, ``model.base`` /
``--model-base`` for the base model of an adapter or checkpoint, ``image_folder``, ``output_dir`` /
``--output-dir``, ``overwrite``, ``device``, ``dtype``; a Hydra key ``a.b_c`` is the flag ``--a-b-c``.
"""

from __future__ import annotations

import argparse
import re
import sys
from typing import Any

from omegaconf import DictConfig, OmegaConf

from yivl.errors import YivlError

# Hydra keys: old -> new. The old keys stay in the YAML (null) so that any way of composing the config
# (the command line, Hydra's compose API, a sweep) accepts them; apply_old_keys moves their values.
OLD_KEYS: dict[str, dict[str, str]] = {
    "eval": {"checkpoint": "model.path", "base_model": "model.base"},
    "infer": {"model_path": "model.path", "base_model": "model.base"},
}

# Keys that are gone, with what replaces them: named in the unknown-key error instead of a guess.
REMOVED_KEYS: dict[str, dict[str, str]] = {
    "infer": {
        "api.allow_file_urls": "local image files are off unless api.allowed_local_media_path=[DIR] "
        "names the folders they may come from",
    },
}

# Command-line flags of data_tools, the export CLI and the tiny builder: old -> new.
OLD_FLAGS = {"--model": "--model-path", "--base-model": "--model-base", "--out": "--output-dir"}

# train.py speaks evaluate.py's names too: device= and dtype= pick the trainer's accelerator and
# precision, output_dir= the run folder (Hydra's, since Hydra creates it before the run starts).
ACCELERATORS = {"auto": "auto", "cpu": "cpu", "cuda": "gpu", "gpu": "gpu", "mps": "mps"}
DTYPE_ALIASES = {"fp32": "float32", "bf16": "bfloat16", "fp16": "float16"}
"""Short dtype names and the dtype each stands for (yivl.models.device maps them to torch)."""
DTYPES = ("auto", "float32", "fp32", "bfloat16", "bf16", "float16", "fp16")
"""``dtype=`` of every tool."""
_PRECISIONS = {"auto": "auto", "float32": "32-true", "bfloat16": "bf16-mixed", "float16": "16-mixed"}
DTYPE_PRECISIONS = {name: _PRECISIONS[DTYPE_ALIASES.get(name, name)] for name in DTYPES}


def train_output_dir(value: str, multirun: bool) -> list[str]:
    return [f"hydra.{'sweep' if multirun else 'run'}.dir={value}"]


def train_device(value: str, multirun: bool) -> list[str]:
    index = re.fullmatch(r"cuda:(\d+)", value)
    if index:
        return ["trainer.accelerator=gpu", f"trainer.devices=[{index.group(1)}]"]
    if value not in ACCELERATORS:
        raise YivlError(
            f"device={value}: use one of auto, cpu, cuda, cuda:N, mps (or set trainer.accelerator= itself)"
        )
    return [f"trainer.accelerator={ACCELERATORS[value]}"]


def train_dtype(value: str, multirun: bool) -> list[str]:
    if value not in DTYPE_PRECISIONS:
        raise YivlError(
            f"dtype={value}: use one of {', '.join(DTYPE_PRECISIONS)} (or set trainer.precision= itself)"
        )
    return [f"trainer.precision={DTYPE_PRECISIONS[value]}"]


TRAIN_SYNONYMS = {"output_dir": train_output_dir, "device": train_device, "dtype": train_dtype}


def note(old: str, new: str) -> None:
    """The one notice line an old spelling gets on stderr."""
    print(f"note: {old} is now {new}", file=sys.stderr, flush=True)


def apply_old_keys(cfg: DictConfig, config_name: str) -> None:
    """Move each old key's value (when set) to its new key, with a notice; the old key becomes null,
    so a second call changes nothing and says nothing."""
    for old, new in OLD_KEYS.get(config_name, {}).items():
        value = cfg[old]
        if value is None:
            continue
        note(f"{old}=", f"{new}=")
        OmegaConf.update(cfg, new, value)
        cfg[old] = None


class OldFlag(argparse.Action):
    """An old flag spelling: stores into the new flag's destination and prints one notice."""

    def __init__(self, option_strings: list[str], dest: str, new: str = "", **kwargs: Any) -> None:
        self.new = new
        super().__init__(option_strings, dest, help=argparse.SUPPRESS, **kwargs)

    def __call__(
        self, parser: argparse.ArgumentParser, namespace: Any, values: Any, option: Any = None
    ) -> None:
        note(str(option), self.new)
        setattr(namespace, self.dest, values)


def add_flag(parser: argparse.ArgumentParser, new: str, **kwargs: Any) -> None:
    """Add ``new`` (e.g. ``--model-path``) and its old spellings from OLD_FLAGS; a ``required`` flag is
    satisfied by either spelling (argparse then names only the new one)."""
    olds = [old for old, name in OLD_FLAGS.items() if name == new]
    target: Any = parser
    if olds and kwargs.pop("required", False):
        target = parser.add_mutually_exclusive_group(required=True)
    action = target.add_argument(new, **kwargs)
    for old in olds:
        target.add_argument(old, action=OldFlag, dest=action.dest, new=new, type=kwargs.get("type"))
