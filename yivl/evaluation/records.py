"""The output folder: its run manifest (what a resume must match) and the append-only sample files."""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from yivl.errors import YivlError

MANIFEST = "run.json"


def samples_path(out_dir: Path, task: str) -> Path:
    return out_dir / f"samples_{task}.jsonl"


def prepare_output_dir(out_dir: Path, manifest: Mapping[str, Any], resume: bool) -> bool:
    """Create ``out_dir`` for this run, or accept it for a resume; returns True when resuming.

    A folder holding another run is refused unless ``resume`` is set and its manifest equals this
    run's (settings, checkpoint and dataset fingerprints); a non-empty folder that holds no run is
    always refused.
    """
    old_path = out_dir / MANIFEST
    if out_dir.exists() and not out_dir.is_dir():
        raise YivlError(f"output_dir {out_dir} is a file; give a folder")
    if out_dir.is_dir() and any(out_dir.iterdir()):
        if not old_path.is_file():
            raise YivlError(
                f"output_dir {out_dir} is not empty and holds no evaluation run; choose a new folder"
            )
        if not resume:
            raise YivlError(
                f"output_dir {out_dir} already holds an evaluation run; pass resume=true to continue it "
                "or choose another output_dir"
            )
        _check_same_run(out_dir, _read_manifest(old_path), manifest)
        return True
    out_dir.mkdir(parents=True, exist_ok=True)
    _atomic_write(old_path, json.dumps(manifest, indent=2, sort_keys=True, default=str) + "\n")
    return False


def _read_manifest(path: Path) -> dict:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as err:
        raise YivlError(
            f"{path} cannot be read ({err}); the run folder is damaged, start a new one"
        ) from None


def _check_same_run(out_dir: Path, old: Mapping[str, Any], new: Mapping[str, Any]) -> None:
    """YivlError naming the first setting that differs between the stored and the current run."""
    old_flat, new_flat = (
        _flatten(json.loads(json.dumps(old, default=str))),
        _flatten(json.loads(json.dumps(new, default=str))),
    )
    for key in [*new_flat, *(k for k in old_flat if k not in new_flat)]:  # settings first
        if old_flat.get(key) != new_flat.get(key):
            raise YivlError(
                f"resume=true but {key} differs from the run in {out_dir} (was {old_flat.get(key)!r}, now "
                f"{new_flat.get(key)!r}); use that run's settings or another output_dir"
            )


def _flatten(value: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(value, Mapping):
        out: dict[str, Any] = {}
        for key, item in value.items():
            out.update(_flatten(item, f"{prefix}.{key}" if prefix else str(key)))
        return out or {prefix: {}}
    return {prefix: value}


def _atomic_write(path: Path, text: str) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)


def write_text(path: Path, text: str) -> None:
    """Write a file in one step (a killed run never leaves half a summary)."""
    _atomic_write(path, text)


def load_records(path: Path, repair: bool = True) -> dict[str, dict[str, Any]]:
    """Records already written by an earlier (killed) run, by id; a torn last line is cut off (left in
    place with ``repair=False``: another process may still be writing it)."""
    if not path.is_file():
        return {}
    data = path.read_bytes()
    lines = data.split(b"\n")
    records: dict[str, dict[str, Any]] = {}
    good = 0
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            good += len(line) + 1
            continue
        try:
            record = json.loads(line)
        except ValueError:
            if number == len(lines):  # the write that was interrupted
                break
            raise YivlError(
                f"{path}:{number} is not valid JSON; delete the line or start a new output_dir"
            ) from None
        records[str(record["id"])] = record
        good += len(line) + 1
    if not repair:
        return records
    if good < len(data):
        with open(path, "r+b") as f:
            f.truncate(good)
    elif data and not data.endswith(b"\n"):  # a whole last record whose newline was not written
        with open(path, "ab") as f:
            f.write(b"\n")
    return records


class SampleWriter:
    """Appends one JSON line per finished sample and flushes it at once (a killed process loses nothing
    written; ``sync`` at the end of a task also guards against a machine crash)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._file = open(path, "a", encoding="utf-8")  # noqa: SIM115 - open for the task's whole run

    def write(self, record: Mapping[str, Any]) -> None:
        self._file.write(json.dumps(record, ensure_ascii=False, default=str) + "\n")
        self._file.flush()

    def sync(self) -> None:
        """Make the lines written so far durable on disk."""
        os.fsync(self._file.fileno())

    def close(self) -> None:
        self._file.close()

    def __enter__(self) -> SampleWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
