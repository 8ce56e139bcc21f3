"""Build a tiny random Yi-VL in the published layout (tests, the default job, demos; nothing downloads).

``python -m yivl.checkpoint.tiny OUT`` or ``yivl-build-tiny OUT``.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from yivl.checkpoint.layout import CONFIG
from yivl.data.images import ImageProcessor
from yivl.data.tokenizer import YiTokenizer
from yivl.errors import YivlError
from yivl.models.presets import preset

if TYPE_CHECKING:  # torch and the model on first build: the builder's --help must not wait for them
    from yivl.checkpoint.shards import Format

TINY_SHARD_BYTES = 1 << 20
"""Small enough that the ~2 MB tiny LLM is split into shards with an index, like the release."""


def build_tiny_checkpoint(
    out_dir: str | Path,
    seed: int = 0,
    weight_format: Format = "safetensors",
    max_shard_bytes: int = TINY_SHARD_BYTES,
    overwrite: bool = False,
) -> Path:
    """Write a deterministic random tiny Yi-VL (preset "tiny", fp32) to ``out_dir``; return its path.

    ``weight_format="bin"`` writes ``pytorch_model*.bin`` (+ index) and ``vit/<name>/pytorch_model.bin``
    like the 01-ai release; the default writes safetensors.
    """
    import torch

    from yivl.checkpoint.save import save_pretrained
    from yivl.checkpoint.tiny_tokenizer import train_tiny_tokenizer
    from yivl.models.yivl import YiVL

    config = preset("tiny")
    torch.manual_seed(seed)
    model = YiVL(config).eval()
    with tempfile.TemporaryDirectory() as tmp:
        train_tiny_tokenizer(tmp, vocab_size=config.llm["vocab_size"])
        tokenizer = YiTokenizer.from_dir(tmp)
        return save_pretrained(
            model,
            out_dir,
            tokenizer,
            ImageProcessor(size=config.image_size),
            max_shard_bytes=max_shard_bytes,
            overwrite=overwrite,
            weight_format=weight_format,
        )


def ensure_tiny_checkpoint(path: str | Path, seed: int = 0) -> Path:
    """Return ``path``, building the tiny model there first if it holds no config.json (build on first use).

    The model is built in a temporary sibling folder and renamed into place, so concurrent callers
    (several ranks) and interrupted builds never leave a half-written directory behind.
    """
    path = Path(path).expanduser()
    if (path / CONFIG).is_file():
        return path.resolve()
    if path.is_dir() and any(path.iterdir()):
        raise YivlError(f"{path} is not empty but holds no config.json; remove it or choose another folder")
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", dir=path.parent))
    try:
        built = build_tiny_checkpoint(tmp / "model", seed)
        try:
            os.rename(built, path)  # atomic; replaces an empty folder, fails on a filled one
        except OSError:
            if not (path / CONFIG).is_file():  # a concurrent caller has not won the race either
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return path.resolve()


def main(argv: Sequence[str] | None = None) -> int:
    """Command line: ``yivl-build-tiny OUT [--seed N] [--format safetensors|bin] [--overwrite]``."""
    parser = argparse.ArgumentParser(prog="yivl-build-tiny", description=__doc__.splitlines()[0])
    parser.add_argument("out", type=Path, help="output directory (must be empty or absent)")
    parser.add_argument("--seed", type=int, default=0, help="random seed of the weights (default 0)")
    parser.add_argument("--format", choices=("safetensors", "bin"), default="safetensors")
    parser.add_argument("--overwrite", action="store_true", help="replace the weights of a non-empty OUT")
    args = parser.parse_args(argv)
    try:
        path = build_tiny_checkpoint(args.out, args.seed, args.format, overwrite=args.overwrite)
    except YivlError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(f"wrote a tiny Yi-VL to {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
