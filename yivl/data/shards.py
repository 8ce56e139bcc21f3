"""WebDataset tar shards: deterministic writing, shard lists, and reading samples back.

A conversation shard holds, per sample, ``KEY.json`` (the Yi-VL/LLaVA record) and, for image records,
``KEY.jpg`` or ``KEY.png``. An img2dataset (LAION) shard holds ``KEY.jpg``, ``KEY.txt`` and ``KEY.json``.
Keys we write never contain dots or slashes (WebDataset splits member names at the first dot of the
file name and keeps the folder in the key).
"""

from __future__ import annotations

import io
import json
import os
import re
import tarfile
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path

import braceexpand

from yivl.errors import YivlError

IMAGE_EXTENSIONS = ("jpg", "jpeg", "png", "webp")
MAX_PENDING_BYTES = 64 << 20
"""Bytes of samples a tar reader holds while it groups members that are not adjacent."""
_MEMBER = re.compile(r"^((?:.*/|)[^.]+)[.]([^/]*)$")  # webdataset's base_plus_ext
SHARD_PATTERN = "{prefix}-{index:06d}.tar"


def shard_name(index: int, prefix: str = "shard") -> str:
    """File name of shard ``index``: ``shard-000012.tar``."""
    return SHARD_PATTERN.format(prefix=prefix, index=index)


def _member(name: str, data: bytes) -> tuple[tarfile.TarInfo, io.BytesIO]:
    """A tar member with fixed metadata, so equal content gives equal bytes."""
    info = tarfile.TarInfo(name)
    info.size = len(data)
    info.mtime = 0
    info.mode = 0o444
    info.uid = info.gid = 0
    info.uname = info.gname = ""
    return info, io.BytesIO(data)


def sample_bytes(members: dict[str, bytes]) -> int:
    """Bytes a sample takes in a tar: a 512-byte header per member plus data padded to 512."""
    return sum(512 + (len(d) + 511) // 512 * 512 for d in members.values())


class TarShardWriter:
    """Writes one shard to ``path`` + ``.tmp``; ``close()`` fsyncs and renames it into place."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.tmp = path.with_name(path.name + ".tmp")
        self._file = open(self.tmp, "wb")  # noqa: SIM115 - open until close()/abort()
        self._tar = tarfile.open(fileobj=self._file, mode="w", format=tarfile.USTAR_FORMAT)  # noqa: SIM115
        self.count = 0
        self.nbytes = 1024  # the end-of-archive blocks

    def write(self, key: str, members: dict[str, bytes]) -> None:
        """Add one sample: ``members`` maps extensions (``json``, ``jpg``...) to bytes, in that order."""
        if "." in key or "/" in key:
            raise ValueError(f"shard key {key!r} must not contain '.' or '/'")
        for ext, data in members.items():
            self._tar.addfile(*_member(f"{key}.{ext}", data))
        self.count += 1
        self.nbytes += sample_bytes(members)

    def close(self) -> int:
        """Finish the archive atomically; returns its size in bytes."""
        self._tar.close()
        self._file.flush()
        os.fsync(self._file.fileno())
        self._file.close()
        os.replace(self.tmp, self.path)
        return self.path.stat().st_size

    def abort(self) -> None:
        """Drop the partial shard."""
        self._tar.close()
        self._file.close()
        self.tmp.unlink(missing_ok=True)


def expand_shards(spec: str | Iterable[str]) -> list[str]:
    """Shard URLs from a brace pattern (``data/{000000..000099}.tar``), ``::``-joined patterns, a folder
    (its ``*.tar`` files, sorted), or a list of any of these. ``pipe:`` commands pass through unchanged;
    missing local shards are a one-line error."""
    items = [spec] if isinstance(spec, str) else list(spec)
    urls: list[str] = []
    for item in items:
        for part in str(item).split("::"):
            urls.extend(_expand_one(part.strip()))
    if not urls:
        raise YivlError(
            f"no shards found for {spec!r}; give a folder, a brace pattern or a list of .tar files"
        )
    return urls


def _expand_one(pattern: str) -> list[str]:
    if not pattern:
        return []
    if pattern.startswith("pipe:") or "://" in pattern:
        return list(braceexpand.braceexpand(pattern))
    path = Path(os.path.expanduser(pattern))
    if path.is_dir():
        return sorted(str(p) for p in path.glob("*.tar"))
    urls = list(braceexpand.braceexpand(os.path.expanduser(pattern)))
    missing = [u for u in urls if not Path(u).is_file()]
    if missing:
        more = f" and {len(missing) - 1} more" if len(missing) > 1 else ""
        raise YivlError(f"shard not found: {missing[0]}{more}; check the shard pattern {pattern!r}")
    return urls


def image_member(sample: dict) -> tuple[str, bytes] | None:
    """``(extension, bytes)`` of a WebDataset sample's image, if it has one."""
    for ext in IMAGE_EXTENSIONS:
        if ext in sample:
            return ext, sample[ext]
    return None


def member_key(name: str) -> tuple[str, str] | None:
    """``(key, extension)`` of a tar member as WebDataset splits it (``base_plus_ext``): the key is the
    path up to the first dot of the file name (``sub/KEY.jpg`` -> ``sub/KEY``, ``jpg``); None when the
    name has no extension (WebDataset skips such members)."""
    m = _MEMBER.match(name)
    return (m.group(1), m.group(2).lower()) if m else None


def read_tar_samples(
    path: str | Path,
    max_bytes: Mapping[str, int] | None = None,
    max_pending_bytes: int = MAX_PENDING_BYTES,
) -> Iterator[dict]:
    """Samples of one local tar, ``{"__key__": key, ext: bytes, ...}``, in order of first appearance.

    Members are grouped by key even when a sample's members are not adjacent (``A.jpg B.jpg A.txt
    B.txt``), holding at most ``max_pending_bytes`` of samples not yet given out. A member whose
    extension is in ``max_bytes`` and is larger is not read: its size goes to ``sample["__oversized__"]``.
    A member that arrives after its sample was given out (the members lie further apart than the pending
    bound) comes as a sample of its own with ``__error__`` and ``__reason__`` (``sample_incomplete``).
    """
    limits = dict(max_bytes or {})
    pending: dict[str, dict] = {}
    held = 0
    done: set[str] = set()
    with tarfile.open(path, mode="r|*") as tar:
        for member in tar:
            split = member_key(member.name) if member.isreg() else None
            if split is None:
                continue
            key, ext = split
            if key in done:
                yield _late_member(key, ext, member.size)
                continue
            sample = pending.setdefault(key, {"__key__": key})
            if ext in limits and member.size > limits[ext]:
                sample.setdefault("__oversized__", {})[ext] = member.size
                continue
            sample[ext] = tar.extractfile(member).read()
            held += member.size
            while held > max_pending_bytes and len(pending) > 1:
                oldest = next(iter(pending))
                held -= _held(pending[oldest])
                done.add(oldest)
                yield pending.pop(oldest)
    yield from pending.values()


def _held(sample: dict) -> int:
    return sum(len(v) for k, v in sample.items() if not k.startswith("__"))


def _late_member(key: str, ext: str, size: int) -> dict:
    return {
        "__key__": key,
        "__reason__": "sample_incomplete",
        "__error__": (
            f"{key}.{ext} ({size:,} bytes) comes after the rest of its sample was read (the members of one "
            "sample lie too far apart in the tar); re-pack the shard with each sample's members together, "
            "e.g. with `python -m data_tools laion --out`"
        ),
    }


def read_manifest(folder: str | Path) -> dict | None:
    """``manifest.json`` written by ``data_tools`` beside its shards, or None."""
    path = Path(folder) / "manifest.json"
    if not path.is_file():
        return None
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except ValueError as err:
        raise YivlError(f"{path} is not valid JSON ({err}); rerun the conversion") from err
