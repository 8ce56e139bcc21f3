"""``inspect``: one sample exactly as the model sees it.

Prints the rendered text, every token with whether it is supervised (green) or masked, the image's size
before and after processing, and the sequence length once the image becomes its features.
"""

from __future__ import annotations

import argparse
import io

from PIL import Image
from rich.table import Table
from rich.text import Text

from data_tools.common import add_image_tokens_arg, add_model_args, model_spec
from data_tools.inputs import conversation_items
from data_tools.report import console
from data_tools.validate import add_input_args
from yivl.constants import IGNORE_INDEX, IMAGE_PLACEHOLDER, IMAGE_TOKEN_INDEX
from yivl.data.encode import EncodedText, SampleEncoder, decode_image, read_image_bytes
from yivl.data.image_files import resolve_image_path
from yivl.data.reasons import SampleRejected
from yivl.data.records import parse_record
from yivl.errors import YivlError

HELP = "show one sample as the model sees it: prompt, supervised tokens, image before/after"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_input_args(parser)
    add_model_args(parser)
    add_image_tokens_arg(parser)
    parser.add_argument("--index", type=int, default=0, help="which record (0-based, in file or shard order)")


def run(args: argparse.Namespace) -> int:
    _, items = conversation_items(args.input, args.index, args.max_record_bytes)
    item = next(iter(items), None)
    if item is None:
        raise YivlError(f"{args.input} has no record {args.index}")
    encoder = model_spec(args).load(with_images=True)
    where = item.key or f"record {item.index}"
    try:
        if item.error:
            raise SampleRejected(item.reason, item.error)
        record = parse_record(item.raw, where)
        text = encoder.encode_text(record, where)
        image = None
        if text.image is not None:
            image = item.image if item.in_shard else _image_file(args, text.image, where)
            if image is None:
                raise SampleRejected("image_missing", f"{where}: the sample has no image member")
            show_image(encoder, image, where)
    except SampleRejected as err:
        console.print(f"[red]rejected[/] ({err.reason}): {err.detail}")
        return 1
    show_tokens(encoder, text, where)
    return 0


def _image_file(args: argparse.Namespace, name: str, where: str) -> bytes:
    folder = (args.image_folder or args.input.parent).resolve()
    path = resolve_image_path(folder, name, where, args.allow_images_outside_folder)
    return read_image_bytes(path, where, args.max_image_bytes)


def show_image(encoder: SampleEncoder, data: bytes, where: str) -> None:
    with Image.open(io.BytesIO(data)) as header:
        fmt, mode, size = header.format, header.mode, header.size
    rgb = decode_image(data, where, encoder.max_pixels)
    pixels = encoder.pixels(data, where)
    side = max(rgb.size)
    table = Table(title="image")
    table.add_column("step")
    table.add_column("value")
    table.add_row("file", f"{fmt} {mode} {size[0]}x{size[1]}, {len(data):,} bytes")
    table.add_row("upright RGB", f"{rgb.size[0]}x{rgb.size[1]}")
    table.add_row("padded to square", f"{side}x{side} (background {encoder.image_processor.background})")
    table.add_row("model input", f"{list(pixels.shape[1:])} float32, mean {pixels.mean():.3f}")
    table.add_row("features", f"{encoder.num_image_tokens} tokens")
    console.print(table)


def show_tokens(encoder: SampleEncoder, text: EncodedText, where: str) -> None:
    ids, labels = text.example.input_ids, text.example.labels
    tok = encoder.tokenizer
    rendered = Text()
    for token, label in zip(ids, labels, strict=True):
        if token == IMAGE_TOKEN_INDEX:
            rendered.append(f"{IMAGE_PLACEHOLDER}", style="bold magenta")
            continue
        piece = tok.decode([token], skip_special_tokens=False)
        rendered.append(piece, style="bold green" if label != IGNORE_INDEX else "dim")
    console.rule(f"{where}: the training text (green = supervised, dim = masked)")
    console.print(rendered)
    console.rule()
    supervised = sum(label != IGNORE_INDEX for label in labels)
    table = Table(title="tokens")
    table.add_column("#", justify="right")
    table.add_column("id", justify="right")
    table.add_column("piece")
    table.add_column("label")
    for i, (token, label) in enumerate(zip(ids, labels, strict=True)):
        piece = (
            "<image>" if token == IMAGE_TOKEN_INDEX else repr(tok.decode([token], skip_special_tokens=False))
        )
        table.add_row(str(i), str(token), piece, "supervised" if label != IGNORE_INDEX else "-")
    console.print(table)
    console.print(
        f"{len(ids)} tokens, {supervised} supervised, {text.example.num_images} image(s) -> "
        f"{text.length} positions after image expansion (limit {encoder.max_length})"
    )
