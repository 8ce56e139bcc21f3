"""``laion``: check, filter and re-shard img2dataset output (``KEY.jpg``, ``KEY.txt``, ``KEY.json``).

Every input sample is written (image bytes passed through when already RGB JPEG/PNG) or rejected with a
reason: unreadable shard, no image, no caption, caption length, corrupt or too large or too small image,
and (with ``--model-path``) too long once the caption becomes a conversation. ``--check`` only reports.
Interrupted, the same command resumes; ``*_stats.json`` successes are compared with what was read.
With ``--part I/N`` one of N jobs takes one slice of the input shards; ``merge`` joins the parts.
"""

from __future__ import annotations

import argparse
import json
from dataclasses import dataclass
from pathlib import Path

from data_tools.common import (
    add_image_bytes_arg,
    add_model_args,
    add_output_args,
    add_record_limit,
    add_reject_fraction_arg,
    positive_int,
    processes,
    reject_check,
)
from data_tools.convert import finish
from data_tools.inputs import early_reject, local_shards, tar_samples
from data_tools.journal import open_output
from data_tools.model import ModelSpec
from data_tools.parallel import ordered_map
from data_tools.parts import add_part_arg, parse_part, part_output
from data_tools.process import prepare_image
from data_tools.report import console, reasons_table
from data_tools.sequence import Outcome, ShardSequence
from yivl.data.captions import DEFAULT_CAPTION_PROMPTS, caption_record, laion_caption
from yivl.data.image_files import DEFAULT_MAX_IMAGE_BYTES
from yivl.data.images import DEFAULT_MAX_PIXELS
from yivl.data.reasons import SampleRejected, Tally
from yivl.data.shards import image_member
from yivl.errors import YivlError
from yivl.progress import progress_bar

HELP = "check/filter/re-shard img2dataset output with full accounting"


@dataclass(frozen=True)
class Filters:
    min_caption_chars: int = 1
    max_caption_chars: int = 1000
    min_image_side: int = 1
    max_pixels: int = DEFAULT_MAX_PIXELS
    max_image_bytes: int = DEFAULT_MAX_IMAGE_BYTES


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("input", help="img2dataset output: a folder of .tar files, a brace pattern or a .tar")
    add_output_args(parser, required=False)
    parser.add_argument("--check", action="store_true", help="only check and report; write nothing")
    parser.add_argument("--min-caption-chars", type=positive_int, default=1)
    parser.add_argument("--max-caption-chars", type=positive_int, default=1000)
    parser.add_argument(
        "--min-image-side", type=positive_int, default=1, help="reject images smaller than this"
    )
    add_record_limit(parser)
    add_image_bytes_arg(parser)
    add_reject_fraction_arg(parser)
    add_model_args(parser, required=False)
    add_part_arg(parser)


_state: dict = {}


def _init(filters: Filters, model: ModelSpec | None) -> None:
    _state["filters"] = filters
    _state["encoder"] = model.load(with_images=False) if model is not None else None


def output_key(key: str) -> str:
    """The key a sample is written under: WebDataset keys a member ``sub/KEY.jpg`` as ``sub/KEY``, and
    a key we write holds no '/' or '.', so folders become ``_`` (``sub/KEY`` -> ``sub_KEY``)."""
    key = key.removeprefix("./")
    return key.replace("/", "_").replace(".", "_")


def check_sample(index: int, sample: dict, filters: Filters, encoder) -> Outcome:
    """One img2dataset sample -> written members (image, txt, json) or a reject."""
    source_key = str(sample["__key__"])
    key = output_key(source_key)
    where = f"{Path(sample['__url__']).name}:{source_key}"
    extra = {"shard": Path(sample["__url__"]).name}
    if key != source_key:
        extra["member_key"] = source_key
    try:
        early = early_reject(sample, where)
        if early is not None:
            raise SampleRejected(*early)
        image = image_member(sample)
        if image is None:
            raise SampleRejected("sample_incomplete", f"{where}: no image member")
        caption = laion_caption(sample, where)
        if not filters.min_caption_chars <= len(caption) <= filters.max_caption_chars:
            raise SampleRejected("caption_length", f"{where}: {len(caption)} characters")
        ext, data, size, action = prepare_image(image[1], where, filters.max_pixels, filters.max_image_bytes)
        if min(size) < filters.min_image_side:
            raise SampleRejected("image_too_small", f"{where}: {size[0]}x{size[1]}")
        tokens = 0
        if encoder is not None:
            tokens = encoder.encode_text(
                caption_record(caption, DEFAULT_CAPTION_PROMPTS[0], where), where
            ).length
    except SampleRejected as err:
        return Outcome(index, key, err.reason, err.detail, extra=extra, has_image=True)
    members = {ext: data, "txt": caption.encode("utf-8"), "json": sample.get("json", b"{}")}
    return Outcome(
        index, key, members=members, tokens=tokens, image_size=size, image_action=action, extra=extra
    )


def laion_job(item: tuple[int, dict]) -> Outcome:
    index, sample = item
    try:
        return check_sample(index, sample, _state["filters"], _state["encoder"])
    except Exception as err:  # bad data must never stop a run
        return Outcome(index, output_key(str(sample.get("__key__"))), "unexpected_error", repr(err))


def _reported_successes(shards: list[Path]) -> int | None:
    total = 0
    for shard in shards:
        try:
            total += int(json.loads(shard.with_name(shard.stem + "_stats.json").read_text())["successes"])
        except (OSError, ValueError, KeyError, TypeError):
            return None
    return total


def run(args: argparse.Namespace) -> int:
    shards = local_shards(args.input)
    part = parse_part(args.part) if args.part is not None else None
    mine = shards[slice(*part.slice(len(shards)))] if part else shards  # a part takes whole input shards
    filters = Filters(
        args.min_caption_chars,
        args.max_caption_chars,
        args.min_image_side,
        args.max_pixels,
        args.max_image_bytes,
    )
    model = ModelSpec(args.model, args.max_length, args.max_pixels) if args.model else None
    if args.check:
        return _check(mine, filters, model, args)
    if args.out is None:
        raise YivlError("pass --output-dir DIR for the filtered shards, or --check to only report")
    params = {
        "tool": "laion",
        "version": 1,
        "input": [{"path": str(s.resolve()), "bytes": s.stat().st_size} for s in shards],
        "filters": filters.__dict__,
        "model": model.fingerprint() if model else None,
        "max_samples": args.max_samples,
        "max_bytes": args.max_bytes,
        "max_record_bytes": args.max_record_bytes,
        "prefix": args.prefix,
        **({"part": part.params()} if part else {}),
    }
    out_dir = part_output(args.out, part) if part else args.out
    journal = open_output(out_dir, json.loads(json.dumps(params)), args.overwrite)
    start = journal.next_index  # a part counts its samples from 0; merge places them after the others
    sequence = ShardSequence(journal, args.max_samples, args.max_bytes, args.prefix)
    items = ((i, s) for i, s in enumerate(tar_samples(mine, args.max_record_bytes)) if i >= start)
    total = start
    with sequence.aborting_on_error(), progress_bar("laion", None) as bar:
        for outcome in ordered_map(laion_job, items, processes(args), _init, (filters, model)):
            sequence.add(outcome)
            total = outcome.index + 1
            bar.advance()
        sequence.finish(total)
    extra = {"img2dataset_successes": _reported_successes(mine)}
    _note_successes(extra["img2dataset_successes"], total)
    return finish(args, journal, total, keys_are_indices=False, extra=extra, part=part)


def _check(shards: list[Path], filters: Filters, model: ModelSpec | None, args: argparse.Namespace) -> int:
    tally = Tally()
    items = enumerate(tar_samples(shards, args.max_record_bytes))
    with progress_bar("laion check", None) as bar:
        for outcome in ordered_map(laion_job, items, processes(args), _init, (filters, model)):
            tally.add(outcome.reason, has_image=True)  # every img2dataset sample is an image-text pair
            bar.advance()
    rejected = sum(tally.rejected.values())
    console.print(f"{tally.total} samples: {tally.kept} usable, {rejected} rejected")
    if tally.rejected:
        console.print(reasons_table(tally.rejected))
    _note_successes(_reported_successes(shards), tally.total)
    reject_check(tally, args, args.input)
    return 0


def _note_successes(reported: int | None, read: int) -> None:
    if reported is not None and reported != read:
        console.print(
            f"[yellow]note:[/] img2dataset's *_stats.json report {reported} successes; {read} were read"
        )
