"""Source configs (plain dicts from the ``data`` config group) -> datasets.

A source is ``{type: json|synthetic|conversation_shards|laion_shards, weight: 1.0, ...}``:

- ``json``: ``path`` (a JSON list or JSONL file), ``image_folder`` (default: the file's folder),
  ``allow_images_outside_folder`` (default false: image paths must resolve inside the folder).
- ``synthetic``: ``root``, ``split`` (train or val), ``num_train``, ``num_val``, ``seed``; generated on
  first use.
- ``conversation_shards``: ``urls`` (folder, brace pattern, ``pipe:`` command or a list).
- ``laion_shards``: ``urls`` and ``caption_prompts`` (a list; default: four short caption requests).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from yivl.data.records import DEFAULT_MAX_RECORD_BYTES
from yivl.data.shards import read_manifest
from yivl.data.sources import (
    DEFAULT_CAPTION_PROMPTS,
    ConversationShardSource,
    JsonSource,
    LaionShardSource,
    ShardSource,
    StreamSource,
)
from yivl.data.synthetic import ensure_synthetic_dataset
from yivl.errors import YivlError

SOURCE_KEYS: dict[str, set[str]] = {
    "json": {"path", "image_folder", "allow_images_outside_folder"},
    "synthetic": {"root", "split", "num_train", "num_val", "seed"},
    "conversation_shards": {"urls"},
    "laion_shards": {"urls", "caption_prompts"},
}
MAP_STYLE = ("json", "synthetic")


def source_type(spec: Mapping[str, Any]) -> str:
    """The source's ``type``, checked, with its keys checked too (one line naming the bad key)."""
    kind = spec.get("type")
    if kind not in SOURCE_KEYS:
        raise YivlError(f"data source type {kind!r} is unknown; use one of {', '.join(SOURCE_KEYS)}")
    unknown = set(spec) - SOURCE_KEYS[kind] - {"type", "weight"}
    if unknown:
        raise YivlError(
            f"data source {kind} does not take {sorted(unknown)}; it takes {sorted(SOURCE_KEYS[kind])}"
        )
    return kind


def _require(spec: Mapping[str, Any], key: str) -> Any:
    if spec.get(key) in (None, ""):
        raise YivlError(f"data source {spec.get('type')} needs `{key}`")
    return spec[key]


def synthetic_files(spec: Mapping[str, Any]) -> tuple[Path, Path]:
    """Generate the synthetic set if needed; return (records file of the split, image folder)."""
    root = ensure_synthetic_dataset(
        _require(spec, "root"),
        num_train=int(spec.get("num_train", 2000)),
        num_val=int(spec.get("num_val", 200)),
        seed=int(spec.get("seed", 0)),
    )
    split = spec.get("split", "train")
    if split not in ("train", "val"):
        raise YivlError(f"synthetic split {split!r} is unknown; use train or val")
    return root / f"{split}.jsonl", root


def record_files(spec: Mapping[str, Any]) -> tuple[Path, Path | None]:
    """(records file, image folder) of a map-style source (json or synthetic)."""
    if source_type(spec) == "synthetic":
        return synthetic_files(spec)
    folder = spec.get("image_folder")
    return Path(_require(spec, "path")), Path(folder) if folder else None


def allows_outside(spec: Mapping[str, Any]) -> bool:
    """The source's ``allow_images_outside_folder`` (false unless given; synthetic data never needs it)."""
    value = spec.get("allow_images_outside_folder", False)
    if not isinstance(value, bool):
        raise YivlError(f"allow_images_outside_folder must be true or false, got {value!r}")
    return value


def build_stream_source(
    spec: Mapping[str, Any], shuffle_buffer: int, max_record_bytes: int = DEFAULT_MAX_RECORD_BYTES
) -> StreamSource:
    """A streaming source from its config; records over ``max_record_bytes`` are rejected unread."""
    kind = source_type(spec)
    weight = float(spec.get("weight", 1.0))
    if weight < 0:
        raise YivlError(f"data source weight must be >= 0, got {weight}")
    if kind in MAP_STYLE:
        path, folder = record_files(spec)
        return JsonSource(path, folder, weight, allows_outside(spec), max_record_bytes)
    if kind == "conversation_shards":
        return ConversationShardSource(_require(spec, "urls"), weight, shuffle_buffer, max_record_bytes)
    prompts = list(spec.get("caption_prompts") or DEFAULT_CAPTION_PROMPTS)
    if not all(isinstance(p, str) and p.strip() for p in prompts):
        raise YivlError("caption_prompts must be a list of non-empty strings")
    return LaionShardSource(_require(spec, "urls"), weight, shuffle_buffer, prompts, max_record_bytes)


def known_samples(source: StreamSource) -> int | None:
    """Samples in a source when known: records of a JSON file, the manifest of converted shards, or the
    ``*_stats.json`` successes of img2dataset shards; None when unknown."""
    if isinstance(source, JsonSource):
        return source.num_units
    if not isinstance(source, ShardSource) or any("://" in u or u.startswith("pipe:") for u in source.urls):
        return None
    folder = Path(source.urls[0]).parent
    manifest = read_manifest(folder)
    if manifest is not None:
        counts = {Path(s["name"]).name: int(s["samples"]) for s in manifest.get("shards", [])}
        names = [Path(u).name for u in source.urls]
        if all(n in counts for n in names):
            return sum(counts[n] for n in names)
    return _img2dataset_successes(source.urls)


def _img2dataset_successes(urls: list[str]) -> int | None:
    total = 0
    for url in urls:
        stats = Path(url).with_name(Path(url).stem + "_stats.json")
        try:
            total += int(json.loads(stats.read_text())["successes"])
        except (OSError, ValueError, KeyError, TypeError):
            return None
    return total
