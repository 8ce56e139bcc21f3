"""Arguments and helpers shared by the data tools."""

from __future__ import annotations

import argparse
import os
import re
import shlex
from pathlib import Path

from data_tools.model import ModelSpec
from yivl.config.vocabulary import add_flag
from yivl.data.formats import DEFAULT_IMAGE_TOKENS, image_tokens
from yivl.data.guard import DEFAULT_MAX_REJECT_FRACTION, checked_fraction, reject_problem
from yivl.data.image_files import DEFAULT_MAX_IMAGE_BYTES
from yivl.data.images import DEFAULT_MAX_PIXELS
from yivl.data.reasons import Tally
from yivl.data.records import DEFAULT_MAX_RECORD_BYTES
from yivl.errors import YivlError

_UNITS = {"": 1, "k": 1 << 10, "m": 1 << 20, "g": 1 << 30, "t": 1 << 40}


def parse_size(text: str) -> int:
    """``"512M"``, ``"1g"``, ``"1048576"`` -> bytes."""
    m = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([kmgt]?)i?b?\s*", text.lower())
    if not m:
        raise argparse.ArgumentTypeError(f"not a size: {text!r} (use e.g. 512M or 1G)")
    return int(float(m.group(1)) * _UNITS[m.group(2)])


def positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {value}")
    return value


def add_record_limit(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--max-record-bytes",
        type=parse_size,
        default=DEFAULT_MAX_RECORD_BYTES,
        help="reject a record (a JSON element or line, a shard's .json/.txt) larger than this as "
        "record_too_large, before reading it, e.g. 4M (default 1M)",
    )


def add_model_args(parser: argparse.ArgumentParser, required: bool = True) -> None:
    add_flag(
        parser,
        "--model-path",
        dest="model",
        metavar="DIR",
        type=Path,
        required=required,
        help="Yi-VL model directory (published layout): its tokenizer, image tokens and context "
        "length decide what is too long",
    )
    parser.add_argument(
        "--max-length",
        type=positive_int,
        default=None,
        help="longest sample in tokens after image expansion (default: the model's context)",
    )
    parser.add_argument(
        "--max-pixels",
        type=positive_int,
        default=DEFAULT_MAX_PIXELS,
        help=f"reject larger images, a decompression-bomb guard (default {DEFAULT_MAX_PIXELS})",
    )
    parser.add_argument(
        "--processes", type=positive_int, default=None, help="worker processes (default: the CPU count)"
    )


def add_image_tokens_arg(parser: argparse.ArgumentParser) -> None:
    """``--image-tokens``: every tool that renders records (convert, validate, stats, inspect)."""
    parser.add_argument(
        "--image-tokens",
        nargs="+",
        default=list(DEFAULT_IMAGE_TOKENS),
        metavar="TOKEN",
        help="image tokens the records use; each becomes <image_placeholder>, placed first in the first "
        "human turn (default: <image_placeholder> <image>)",
    )


def add_format_args(parser: argparse.ArgumentParser) -> None:
    """``--image-tokens`` and ``--max-reject-fraction``, shared by convert, validate and stats."""
    add_image_tokens_arg(parser)
    add_reject_fraction_arg(parser)


def add_reject_fraction_arg(parser: argparse.ArgumentParser) -> None:
    """``--max-reject-fraction``: every tool that reads records (convert, validate, stats, laion)."""
    parser.add_argument(
        "--max-reject-fraction",
        type=float,
        default=DEFAULT_MAX_REJECT_FRACTION,
        help="exit non-zero when more of the records are rejected (default 0.05; 1 accepts any fraction). "
        "A file whose image records are all rejected always fails",
    )


def reject_check(tally: Tally, args: argparse.Namespace, name: str) -> None:
    """Raise the one-line YivlError of the reject rule (see yivl.data.guard) when ``tally`` fails it."""
    fraction = checked_fraction(args.max_reject_fraction, "--max-reject-fraction")
    problem = reject_problem(tally, fraction, name, "--max-reject-fraction")
    if problem:
        raise YivlError(problem)


def add_output_args(parser: argparse.ArgumentParser, required: bool = True) -> None:
    add_flag(
        parser,
        "--output-dir",
        dest="out",
        metavar="DIR",
        type=Path,
        required=required,
        help="output folder (created; resumed if interrupted)"
        + ("" if required else "; needed unless --check"),
    )
    parser.add_argument(
        "--max-samples", type=positive_int, default=1000, help="samples per shard (default 1000)"
    )
    parser.add_argument(
        "--max-bytes",
        type=parse_size,
        default=parse_size("512M"),
        help="bytes per shard, e.g. 512M or 1G (default 512M)",
    )
    parser.add_argument(
        "--prefix", default="shard", help="shard file prefix: PREFIX-000000.tar (default shard)"
    )
    parser.add_argument("--overwrite", action="store_true", help="delete the output folder and start over")


def model_spec(args: argparse.Namespace) -> ModelSpec:
    if args.model is None:
        raise YivlError("pass --model-path DIR (a Yi-VL model directory) to tokenize the samples")
    tokens = image_tokens(args.image_tokens, "--image-tokens")
    return ModelSpec(args.model, args.max_length, args.max_pixels, tokens)


def processes(args: argparse.Namespace) -> int:
    return args.processes or os.cpu_count() or 1


def add_image_file_args(parser: argparse.ArgumentParser) -> None:
    """``--max-image-bytes`` and ``--allow-images-outside-folder`` (see docs/data.md, Limits)."""
    add_image_bytes_arg(parser)
    parser.add_argument(
        "--allow-images-outside-folder",
        action="store_true",
        help="accept image paths that resolve outside the image folder (.., absolute paths, symlinks out)",
    )


def add_image_bytes_arg(parser: argparse.ArgumentParser) -> None:
    """``--max-image-bytes``: image files and shard image members (laion has no image folder)."""
    parser.add_argument(
        "--max-image-bytes",
        type=parse_size,
        default=DEFAULT_MAX_IMAGE_BYTES,
        help="reject image files (and shard image members) larger than this, unread (default 64M)",
    )


def rerun_command(args: argparse.Namespace) -> str:
    """The command line that ran this tool, without ``--overwrite`` (which would discard the progress)."""
    return shlex.join(["python", "-m", "data_tools", *(a for a in args.argv if a != "--overwrite")])
