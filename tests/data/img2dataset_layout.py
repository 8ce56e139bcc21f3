"""img2dataset output written by img2dataset's own shard writer: ``00000.tar`` (``000000000.jpg``,
``.txt``, ``.json``), ``00000.parquet`` and ``00000_stats.json`` beside it."""

from __future__ import annotations

import importlib.util
import io
import json
import tarfile
import time
from pathlib import Path

import pyarrow as pa
from PIL import Image


def _writer_module():
    """``img2dataset/writer.py`` alone: the package's ``__init__`` imports its downloader (and wandb),
    seconds of imports the writer does not need."""
    origin = Path(importlib.util.find_spec("img2dataset").origin).parent / "writer.py"
    spec = importlib.util.spec_from_file_location("img2dataset_writer", origin)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


SCHEMA = pa.schema(
    [
        ("url", pa.string()),
        ("caption", pa.string()),
        ("key", pa.string()),
        ("status", pa.string()),
        ("error_message", pa.string()),
        ("width", pa.int32()),
        ("height", pa.int32()),
        ("original_width", pa.int32()),
        ("original_height", pa.int32()),
        ("exif", pa.string()),
        ("sha256", pa.string()),
    ]
)


def jpeg(colour: tuple[int, int, int], size: tuple[int, int] = (48, 32)) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", size, colour).save(buf, format="JPEG", quality=90)
    return buf.getvalue()


def write_shard(
    folder: Path, shard_id: int, captions: list[str], size: tuple[int, int] = (48, 32)
) -> list[str]:
    """One img2dataset shard of red-ish JPEGs (``size``) with ``captions``; returns the keys."""
    import hashlib

    writer = _writer_module().WebDatasetSampleWriter(shard_id, str(folder), True, 5, SCHEMA, "jpg")
    keys = []
    for i, caption in enumerate(captions):
        key = f"{shard_id * 10_000 + i:09d}"  # img2dataset's compute_key with 4 + 5 digits
        image = jpeg((200, 10 * i % 250, 30), size)
        meta = {
            "url": f"https://example.com/{key}.jpg",
            "caption": caption,
            "key": key,
            "status": "success",
            "error_message": None,
            "width": size[0],
            "height": size[1],
            "original_width": 480,
            "original_height": 320,
            "exif": "{}",
            "sha256": hashlib.sha256(image).hexdigest(),
        }
        writer.write(image, key, caption, meta)
        keys.append(key)
    writer.close()
    now = time.time()
    stats = {
        "count": len(captions),
        "successes": len(captions),
        "failed_to_download": 0,
        "failed_to_resize": 0,
        "duration": 1.0,
        "start_time": now - 1,
        "end_time": now,
        "status_dict": {"success": len(captions)},
    }
    (folder / f"{shard_id:05d}_stats.json").write_text(json.dumps(stats, indent=4))
    return keys


def repack(path: Path, rename=None, order=None) -> None:
    """Rewrite a tar with members renamed (``rename(name) -> name``) and reordered (``order(names)``)."""
    with tarfile.open(path) as tar:
        members = [(m.name, tar.extractfile(m).read()) for m in tar.getmembers() if m.isreg()]
    if order is not None:
        by_name = dict(members)
        members = [(n, by_name[n]) for n in order([n for n, _ in members])]
    with tarfile.open(path, "w") as tar:
        for name, data in members:
            info = tarfile.TarInfo(rename(name) if rename else name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
