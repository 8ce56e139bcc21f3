"""The output folder of a conversion and its progress journal, which makes conversions resumable.

``OUT/progress.jsonl`` starts with a header (the tool and its parameters) followed by one line per
commit. A commit covers the input range ``[start, end)``: a finished shard (renamed into place first)
and the rejects of that range (appended to ``OUT/rejects.jsonl`` second); the journal line comes last.
A run killed at any point resumes from the last complete line: later shards, ``.tmp`` files and
rejects past the recorded offset are removed, and processing restarts at ``end``. Since shard
boundaries depend only on the input from that point, the result equals an uninterrupted run.
"""

from __future__ import annotations

import json
import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from yivl.errors import YivlError

JOURNAL = "progress.jsonl"
REJECTS = "rejects.jsonl"
MANIFEST = "manifest.json"


@dataclass
class Journal:
    """The commits so far; ``append`` makes a new one durable."""

    out_dir: Path
    params: dict
    commits: list[dict] = field(default_factory=list)
    first_index: int = 0  # where the input range starts: a part's slice start (data_tools.parts)

    @property
    def next_index(self) -> int:
        return self.commits[-1]["end"] if self.commits else self.first_index

    @property
    def next_shard(self) -> int:
        return sum(1 for c in self.commits if c.get("shard"))

    @property
    def rejects_offset(self) -> int:
        return self.commits[-1]["rejects_offset"] if self.commits else 0

    def append(self, commit: dict) -> None:
        _append_line(self.out_dir / JOURNAL, commit)
        self.commits.append(commit)


def _append_line(path: Path, obj: Any) -> None:
    with open(path, "a", encoding="utf-8") as f:
        f.write(json.dumps(obj, sort_keys=True) + "\n")
        f.flush()
        os.fsync(f.fileno())


def read_journal(path: Path) -> tuple[dict, list[dict]]:
    """Header and complete commit lines; a torn last line (killed mid-write) is dropped."""
    lines = path.read_bytes().split(b"\n")
    entries = []
    for line in lines:
        try:
            entries.append(json.loads(line))
        except ValueError:
            break  # the torn tail, or the empty string after the last newline
    if not entries:
        raise YivlError(f"{path} is damaged; delete the output folder or pass --overwrite")
    return entries[0], entries[1:]


def rewrite_journal(path: Path, header: dict, commits: list[dict]) -> None:
    """Write ``path`` whole, atomically."""
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(
        "".join(json.dumps(e, sort_keys=True) + "\n" for e in [header, *commits]), encoding="utf-8"
    )
    os.replace(tmp, path)


def _clean_beyond(out_dir: Path, journal: Journal) -> None:
    """Remove what a killed run left past the last commit: shards, temporary files, extra rejects."""
    committed = {c["shard"]["name"] for c in journal.commits if c.get("shard")}
    for path in out_dir.iterdir():
        is_shard = path.suffix == ".tar" and path.name not in committed
        if is_shard or path.name.endswith(".tmp"):
            path.unlink()
    rejects = out_dir / REJECTS
    if rejects.exists():
        with open(rejects, "r+b") as f:
            f.truncate(journal.rejects_offset)
    (out_dir / MANIFEST).unlink(missing_ok=True)


def open_output(out_dir: Path, params: dict, overwrite: bool, first_index: int = 0) -> Journal:
    """Start a new output folder, or resume the interrupted run with the same parameters; the input
    range starts at ``first_index``."""
    journal_path = out_dir / JOURNAL
    if overwrite and out_dir.exists():
        shutil.rmtree(out_dir)
    if journal_path.exists():
        header, commits = read_journal(journal_path)
        if header != params:
            changed = sorted(k for k in set(header) | set(params) if header.get(k) != params.get(k))
            raise YivlError(
                f"{out_dir} holds a conversion with other settings or input ({', '.join(changed)} differ); "
                "pass --overwrite to start over or choose another output folder"
            )
        rewrite_journal(journal_path, header, commits)  # drops a torn last line
        journal = Journal(out_dir, params, commits, first_index)
        _clean_beyond(out_dir, journal)
        return journal
    if out_dir.exists() and any(out_dir.iterdir()):
        raise YivlError(
            f"{out_dir} is not empty and holds no conversion; choose an empty folder or pass --overwrite"
        )
    out_dir.mkdir(parents=True, exist_ok=True)
    _append_line(journal_path, params)
    return Journal(out_dir, params, first_index=first_index)


def append_rejects(out_dir: Path, lines: list[dict]) -> int:
    """Append reject lines durably; returns the file's new size (the offset a commit records)."""
    path = out_dir / REJECTS
    with open(path, "ab") as f:
        for line in lines:
            f.write(reject_bytes(line))
        f.flush()
        os.fsync(f.fileno())
        return f.tell()


def reject_bytes(line: dict) -> bytes:
    """One line of ``rejects.jsonl``, as every tool (and ``merge``) writes it."""
    return (json.dumps(line, ensure_ascii=False, sort_keys=True) + "\n").encode("utf-8")


def write_manifest(out_dir: Path, manifest: dict) -> None:
    """``manifest.json``, atomically: its presence marks a complete conversion."""
    tmp = out_dir / (MANIFEST + ".tmp")
    tmp.write_text(json.dumps(manifest, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    os.replace(tmp, out_dir / MANIFEST)
