"""``convert``: Yi-VL/LLaVA JSON conversations + an image folder -> conversation shards.

Every input record is written or rejected with one reason; the counts are checked on disk at the end.
Interrupted (Ctrl-C or kill), the same command resumes where the last finished shard ended.
With ``--part I/N`` one of N jobs converts one slice of the records; ``merge`` joins the parts.
"""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path

from data_tools.common import (
    add_format_args,
    add_image_file_args,
    add_model_args,
    add_output_args,
    add_record_limit,
    model_spec,
    processes,
    reject_check,
    rerun_command,
)
from data_tools.duplicates import DuplicateIds, counting_ids
from data_tools.inputs import record_items
from data_tools.journal import Journal, open_output, write_manifest
from data_tools.parallel import WorkerDied, WorkerStalled, ordered_map
from data_tools.parts import Part, add_part_arg, parse_part, part_output
from data_tools.process import Job, convert_job, init_worker
from data_tools.report import build_manifest, console, manifest_tally, print_summary, verify_output
from data_tools.sequence import ShardSequence
from yivl.data.records import RecordFile
from yivl.errors import YivlError
from yivl.progress import progress_bar

HELP = "JSON/JSONL conversations + image folder -> conversation shards (resumable, fully accounted)"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "input", type=Path, help="a JSON list or JSONL file of Yi-VL/LLaVA conversation records"
    )
    parser.add_argument(
        "--image-folder",
        type=Path,
        help="folder the records' `image` paths are relative to (default: the input file's folder)",
    )
    add_image_file_args(parser)
    add_record_limit(parser)
    add_output_args(parser)
    add_model_args(parser)
    add_format_args(parser)
    add_part_arg(parser)


def _input_params(path: Path, records: RecordFile) -> dict:
    st = path.stat()
    return {
        "path": str(path.resolve()),
        "bytes": st.st_size,
        "mtime_ns": st.st_mtime_ns,
        "records": len(records),
    }


def run(args: argparse.Namespace) -> int:
    records = RecordFile(args.input, args.max_record_bytes)
    image_folder = (args.image_folder or args.input.parent).resolve()
    if not image_folder.is_dir():
        raise YivlError(f"image folder not found: {image_folder}; pass --image-folder")
    spec = model_spec(args)
    part = parse_part(args.part) if args.part is not None else None
    params = {
        "tool": "convert",
        "version": 1,
        "input": _input_params(args.input, records),
        "image_folder": str(image_folder),
        "model": spec.fingerprint(),
        "max_samples": args.max_samples,
        "max_bytes": args.max_bytes,
        "max_record_bytes": args.max_record_bytes,
        "prefix": args.prefix,
        "max_image_bytes": args.max_image_bytes,
        "allow_images_outside_folder": args.allow_images_outside_folder,
        "image_tokens": list(spec.image_tokens),
        **({"part": part.params()} if part else {}),
    }
    params = json.loads(json.dumps(params))
    first, end = part.slice(len(records)) if part else (0, len(records))
    out_dir = part_output(args.out, part) if part else args.out
    journal = open_output(out_dir, params, args.overwrite, first)
    start = journal.next_index
    if start == end:
        console.print(f"{out_dir} already holds all {end - first} records; checking it")
    elif start > first:
        console.print(f"resuming at record {start} of {end} ({journal.next_shard} shards done)")
    sequence = ShardSequence(journal, args.max_samples, args.max_bytes, args.prefix)
    ids = DuplicateIds()  # over every record up to ``end``, those before a part or a resumed run included
    items = (item for item in counting_ids(record_items(records, 0, end), ids) if item.index >= start)
    job = Job(spec, image_folder, True, args.max_image_bytes, args.allow_images_outside_folder)
    try:
        with sequence.aborting_on_error(), progress_bar("convert", end - start) as bar:
            for outcome in ordered_map(convert_job, items, processes(args), init_worker, (job,)):
                sequence.add(outcome)
                bar.advance()
            sequence.finish(end)
    except (WorkerDied, WorkerStalled) as err:
        raise YivlError(
            f"{err}; {journal.next_index - first} of {end - first} records are committed in "
            f"{journal.next_shard} complete shards; resume with: {rerun_command(args)}"
        ) from None
    extra = {"duplicate_ids": ids.summary()}
    return finish(args, journal, end - first, keys_are_indices=True, extra=extra, part=part)


def finish(
    args: argparse.Namespace,
    journal: Journal,
    total: int,
    keys_are_indices: bool,
    extra: dict | None = None,
    part: Part | None = None,
) -> int:
    """Write the manifest, verify the output on disk, print the summary, then apply the reject rule
    (after everything is on disk, so a refused run loses nothing); exit status 0 when reconciled.
    A part leaves the reject rule to ``merge``, which sees every record."""
    out_dir = journal.out_dir
    manifest = build_manifest(journal, total, extra)
    problems = verify_output(out_dir, manifest, keys_are_indices)
    write_manifest(out_dir, manifest)
    ok = print_summary(manifest, str(out_dir))
    for problem in problems:
        console.print(f"[red]problem:[/] {problem}")
    if part is not None:
        if ok:
            console.print(
                f"part {part.index} of {part.count} done; once every part is, join them with: "
                f"python -m data_tools merge --output-dir {args.out}"
            )
        return 0 if ok else 1
    if ok and os.environ.get("YIVL_DATA_TOOLS_QUIET") is None:
        console.print(f"manifest: {out_dir / 'manifest.json'}; rejects: {out_dir / 'rejects.jsonl'}")
    reject_check(manifest_tally(manifest), args, str(args.input))
    return 0 if ok else 1
