"""``validate``: the checks of ``convert`` (records, chat format, lengths, images) without writing shards.

Prints the reject reasons by count; ``--rejects FILE`` also writes one JSON line per rejected record.
Works on a JSON/JSONL file with its image folder, or on conversation shards.
"""

from __future__ import annotations

import argparse
import json
from collections import Counter
from pathlib import Path

from data_tools.common import (
    add_format_args,
    add_image_file_args,
    add_model_args,
    add_record_limit,
    model_spec,
    processes,
    reject_check,
    rerun_command,
)
from data_tools.duplicates import DuplicateIds, counting_ids, describe
from data_tools.inputs import conversation_items
from data_tools.parallel import WorkerDied, WorkerStalled, ordered_map
from data_tools.process import Job, convert_job, init_worker
from data_tools.report import console, percentiles, reasons_table, stats_table
from data_tools.sequence import Outcome
from yivl.data.reasons import Tally
from yivl.errors import YivlError
from yivl.progress import progress_bar

HELP = "check records exactly as convert would, without writing; print reject reasons by count"


def add_input_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "input", type=Path, help="a JSON/JSONL file, or conversation shards (folder or pattern)"
    )
    parser.add_argument(
        "--image-folder",
        type=Path,
        help="folder the records' `image` paths are relative to (default: the input file's folder)",
    )
    add_image_file_args(parser)
    add_record_limit(parser)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_input_args(parser)
    add_model_args(parser)
    add_format_args(parser)
    parser.add_argument("--rejects", type=Path, help="write the rejected records' reasons here (JSONL)")


def outcomes(args: argparse.Namespace, description: str, ids: DuplicateIds | None = None):
    """Outcomes of every input record, in order, with a progress bar; ``ids`` counts repeated ids."""
    total, items = conversation_items(args.input, max_record_bytes=args.max_record_bytes)
    if ids is not None:
        items = counting_ids(items, ids)
    folder = (args.image_folder or Path(args.input).parent).resolve()
    job = Job(model_spec(args), folder, False, args.max_image_bytes, args.allow_images_outside_folder)
    done = 0
    try:
        with progress_bar(description, total) as bar:
            for outcome in ordered_map(convert_job, items, processes(args), init_worker, (job,)):
                bar.advance()
                done += 1
                yield outcome
    except (WorkerDied, WorkerStalled) as err:
        raise YivlError(f"{err} after {done} records; run it again: {rerun_command(args)}") from None


def run(args: argparse.Namespace) -> int:
    tally = Tally()
    tokens: Counter = Counter()
    ids = DuplicateIds()
    rejects_file = open(args.rejects, "w", encoding="utf-8") if args.rejects else None  # noqa: SIM115
    try:
        for outcome in outcomes(args, "validate", ids):
            _count(outcome, tally, tokens, rejects_file)
    finally:
        if rejects_file:
            rejects_file.close()
    rejected = sum(tally.rejected.values())
    repairs = sum(tally.repaired.values())
    repaired = f" ({repairs} repairs)" if repairs else ""
    console.print(f"{tally.total} records: {tally.kept} usable{repaired}, {rejected} rejected")
    if ids.count:
        console.print(f"duplicate ids: {describe(ids.summary())}; those records are still used")
    if tokens:
        console.print(
            stats_table("Tokens per usable sample (after image expansion)", {"tokens": percentiles(tokens)})
        )
    if tally.rejected:
        console.print(reasons_table(tally.rejected))
    if tally.repaired:
        console.print(reasons_table(tally.repaired, "Repaired (still usable)", "repair"))
    reject_check(tally, args, str(args.input))
    return 0


def _count(outcome: Outcome, tally: Tally, tokens: Counter, rejects_file) -> None:
    tally.add(outcome.reason, outcome.has_image, outcome.repairs)
    if outcome.reason is None:
        tokens[outcome.tokens] += 1
        return
    if rejects_file is not None:
        rejects_file.write(json.dumps(outcome.reject_line(), ensure_ascii=False) + "\n")
