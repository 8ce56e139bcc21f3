"""``merge``: join the parts written by ``convert --part I/N`` or ``laion --part I/N`` into one output.

Every part must have finished, reconciled, with the same input and settings. The shards of the parts
become ``OUT/shard-000000.tar``... in part order (hard links, copies where the file system has none),
their rejects one ``OUT/rejects.jsonl`` with indices counted over the whole input, and their journals one
``OUT/progress.jsonl``; then ``manifest.json`` is written and re-checked on disk as after a one-job run.
The samples, in shard order, and the rejects file equal a one-job run's byte for byte; only where shards
end differs (each part closes its last shard). Merging again gives the same result.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
from dataclasses import dataclass
from pathlib import Path

from data_tools.common import add_reject_fraction_arg
from data_tools.convert import finish
from data_tools.journal import (
    JOURNAL,
    MANIFEST,
    REJECTS,
    Journal,
    read_journal,
    reject_bytes,
    rewrite_journal,
)
from data_tools.parts import PARTS, Part, part_folders
from yivl.config.vocabulary import add_flag
from yivl.data.shards import read_manifest, shard_name
from yivl.errors import YivlError

HELP = "join the parts of a --part I/N conversion into one manifest, rejects file and shard list"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_flag(
        parser,
        "--output-dir",
        dest="out",
        metavar="DIR",
        type=Path,
        required=True,
        help="the --output-dir every part was written to; the merged output goes there too",
    )
    add_reject_fraction_arg(parser)


@dataclass(frozen=True)
class Finished:
    """A part that finished: its folder, journal and manifest."""

    part: Part
    folder: Path
    header: dict
    commits: list[dict]
    manifest: dict


def _settings(header: dict) -> dict:
    return {k: v for k, v in header.items() if k != "part"}


def finished_parts(out_dir: Path) -> list[Finished]:
    """Parts 1..N of ``out_dir``, each finished and reconciled, all with the same settings and input."""
    found = part_folders(out_dir)
    if not found:
        raise YivlError(
            f"{out_dir} holds no parts ({out_dir / PARTS}/part-I-of-N); run convert or laion with "
            f"--part I/N --output-dir {out_dir} first, then merge"
        )
    counts = sorted({p.count for p in found})
    if len(counts) > 1:
        raise YivlError(
            f"{out_dir} holds parts of {' and '.join(map(str, counts))}-part splits; delete the folders of "
            f"the split you do not want under {out_dir / PARTS}, then merge again"
        )
    done = [_finished(out_dir, found, Part(i, counts[0])) for i in range(1, counts[0] + 1)]
    base = _settings(done[0].header)
    for d in done[1:]:
        other = _settings(d.header)
        changed = sorted(k for k in set(base) | set(other) if base.get(k) != other.get(k))
        if changed:
            raise YivlError(
                f"{out_dir}: part {d.part.index} of {d.part.count} was made with other settings or input "
                f"than part 1 ({', '.join(changed)} differ); rerun it with part 1's options and "
                f"--overwrite --part {d.part.index}/{d.part.count}, then merge again"
            )
    return done


def _finished(out_dir: Path, found: dict[Part, Path], part: Part) -> Finished:
    rerun = f"--part {part.index}/{part.count}"
    folder = found.get(part, out_dir / PARTS / part.name)
    if part not in found:
        raise YivlError(
            f"{out_dir}: part {part.index} of {part.count} is missing (no {folder}); run the same "
            f"command with {rerun}, then merge again"
        )
    manifest = read_manifest(folder)
    if manifest is None:
        raise YivlError(
            f"{out_dir}: part {part.index} of {part.count} has not finished ({folder} has no "
            f"{MANIFEST}: interrupted or still running); rerun it with {rerun} to resume, then merge again"
        )
    if not manifest["reconciled"]:
        raise YivlError(
            f"{out_dir}: part {part.index} of {part.count} is not reconciled (see its summary); rerun it "
            f"with --overwrite {rerun}, then merge again"
        )
    header, commits = read_journal(folder / JOURNAL)
    if header.get("part") != part.params():
        raise YivlError(f"{folder} holds part {header.get('part')}, not {part.name}; rerun it with {rerun}")
    return Finished(part, folder, header, commits, manifest)


def _link(src: Path, dst: Path) -> None:
    """``dst`` becomes ``src``'s content: a hard link, or a copy where the file system has none."""
    tmp = dst.with_name(dst.name + ".tmp")
    tmp.unlink(missing_ok=True)
    try:
        os.link(src, tmp)
    except OSError:
        shutil.copyfile(src, tmp)
    os.replace(tmp, dst)


def join_parts(out_dir: Path, prefix: str, done: list[Finished]) -> list[dict]:
    """Link the shards, write the rejects and return the commits, as one run over the whole input."""
    commits: list[dict] = []
    names: set[str] = set()
    running = 0  # input records before this part
    tmp = out_dir / (REJECTS + ".tmp")
    with open(tmp, "wb") as rejects:
        for d in done:
            path = d.folder / REJECTS
            lines = iter(path.read_bytes().splitlines() if path.exists() else [])
            shift = running - d.commits[0]["start"] if d.commits else 0  # laion parts count from 0
            for c in d.commits:
                for _ in range(c["rejects"]):
                    line = json.loads(next(lines))
                    rejects.write(reject_bytes({**line, "index": line["index"] + shift}))
                shard = c["shard"]
                if shard:
                    shard = {**shard, "name": shard_name(len(names), prefix)}
                    _link(d.folder / c["shard"]["name"], out_dir / shard["name"])
                    names.add(shard["name"])
                moved = {"start": c["start"] + shift, "end": c["end"] + shift, "shard": shard}
                commits.append({**c, **moved, "rejects_offset": rejects.tell()})
            running += d.manifest["records"]["input"]
        rejects.flush()
        os.fsync(rejects.fileno())
    os.replace(tmp, out_dir / REJECTS)
    for path in out_dir.iterdir():  # shards of an earlier merge that this one does not have
        if (path.suffix == ".tar" and path.name not in names) or path.name.endswith(".tmp"):
            path.unlink()
    return commits


def _extra(tool: str, done: list[Finished]) -> dict:
    """The tool's own manifest fields over the whole input."""
    if tool == "convert":  # the last part counted the ids of every record up to its end: all of them
        return {"duplicate_ids": done[-1].manifest["duplicate_ids"]}
    successes = [d.manifest["img2dataset_successes"] for d in done]
    return {"img2dataset_successes": None if None in successes else sum(successes)}


def run(args: argparse.Namespace) -> int:
    out_dir = args.out
    done = finished_parts(out_dir)
    params = _settings(done[0].header)
    (out_dir / MANIFEST).unlink(missing_ok=True)  # until the merged output is checked
    commits = join_parts(out_dir, params["prefix"], done)
    rewrite_journal(out_dir / JOURNAL, params, commits)
    total = sum(d.manifest["records"]["input"] for d in done)
    if params["tool"] == "convert":
        name = params["input"]["path"]
    else:
        name = str(Path(params["input"][0]["path"]).parent) if params["input"] else str(out_dir)
    ns = argparse.Namespace(out=out_dir, input=name, max_reject_fraction=args.max_reject_fraction)
    extra = {**_extra(params["tool"], done), "parts": len(done)}
    journal = Journal(out_dir, params, commits)
    return finish(ns, journal, total, keys_are_indices=params["tool"] == "convert", extra=extra)
