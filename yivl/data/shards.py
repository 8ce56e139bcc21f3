"""WebDataset tar shards: deterministic writing, shard lists, and reading samples back.

A conversation shard holds, per sample, ``KEY.json`` (the Yi-VL/LLaVA record) and, for image records,
``KEY.jpg`` or ``KEY.png``. An img2dataset (LAION) shard holds ``KEY.jpg``, ``KEY.txt`` and ``KEY.json``.
Keys never contain dots (WebDataset splits member names at the first dot).
"""

from __future__ import annotations

import io
import json
import os
import tarfile
from collections.abc import Iterable, Iterator
from pathlib import Path

import braceexpand

from yivl.errors import YivlError

IMAGE_EXTENSIONS = ("jpg", "jpeg", "png", "webp")
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


def read_tar_samples(path: str | Path) -> Iterator[dict]:
    """Samples of one local tar in order, grouped by key: ``{"__key__": key, ext: bytes, ...}``."""
    current: dict | None = None
    with tarfile.open(path, mode="r|*") as tar:
        for member in tar:
            if not member.isreg():
                continue
            key, _, ext = member.name.partition(".")
            data = tar.extractfile(member).read()
            if current is None or current["__key__"] != key:
                if current is not None:
                    yield current
                current = {"__key__": key}
            current[ext.lower()] = data
    if current is not None:
        yield current


def read_manifest(folder: str | Path) -> dict | None:
    """``manifest.json`` written by ``data_tools`` beside its shards, or None."""
    path = Path(folder) / "manifest.json"
    if not path.is_file():
        return None
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except ValueError as err:
        raise YivlError(f"{path} is not valid JSON ({err}); rerun the conversion") from err
