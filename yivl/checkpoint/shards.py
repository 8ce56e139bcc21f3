"""Weight files of one folder: find them, list their tensors, stream them.

Reading goes through memory maps (``safe_open``; ``torch.load(weights_only=True, mmap=True)``) and
re-opens a file every ``reopen_bytes`` so the mapped pages already copied out are released: the
resident set never holds a whole shard next to the tensors copied from it.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import torch
from safetensors import SafetensorError, safe_open

from yivl.errors import YivlError

log = logging.getLogger(__name__)

Format = Literal["safetensors", "bin"]

# (file name, format, is an index), in order of preference: safetensors first, like transformers.
WEIGHT_FILES: tuple[tuple[str, Format, bool], ...] = (
    ("model.safetensors.index.json", "safetensors", True),
    ("model.safetensors", "safetensors", False),
    ("pytorch_model.bin.index.json", "bin", True),
    ("pytorch_model.bin", "bin", False),
)
ST_DTYPES = {
    "F64": torch.float64,
    "F32": torch.float32,
    "F16": torch.float16,
    "BF16": torch.bfloat16,
    "I64": torch.int64,
    "I32": torch.int32,
    "I16": torch.int16,
    "I8": torch.int8,
    "U8": torch.uint8,
    "BOOL": torch.bool,
    "F8_E4M3": torch.float8_e4m3fn,
    "F8_E5M2": torch.float8_e5m2,
}


@dataclass(frozen=True)
class TensorInfo:
    """Where one stored tensor lives and what it looks like (read from headers, no data)."""

    file: Path
    shape: tuple[int, ...]
    dtype: torch.dtype

    @property
    def nbytes(self) -> int:
        return torch.Size(self.shape).numel() * self.dtype.itemsize


@dataclass(frozen=True)
class WeightFiles:
    """The weight files of one folder: their format and every tensor they hold, by stored key."""

    folder: Path
    format: Format
    tensors: dict[str, TensorInfo]

    @property
    def nbytes(self) -> int:
        return sum(info.nbytes for info in self.tensors.values())


def find_weights(folder: Path, what: str) -> WeightFiles:
    """List the tensors of ``folder``'s weights (index json or single file); YivlError if there are none.

    ``what`` names the folder in messages ("model directory", "vision tower folder").
    """
    for name, fmt, is_index in WEIGHT_FILES:
        path = folder / name
        if path.is_file():
            weight_map = _read_index(path) if is_index else None
            files = [folder / n for n in dict.fromkeys(weight_map.values())] if weight_map else [path]
            tensors: dict[str, TensorInfo] = {}
            for file in files:
                tensors.update(list_tensors(file, fmt))
            if weight_map:
                _check_index(path, weight_map, tensors)
            return WeightFiles(folder, fmt, tensors)
    expected = ", ".join(name for name, _, _ in WEIGHT_FILES)
    raise YivlError(f"no weights in {what} {folder}: expected one of {expected}")


def _read_index(index: Path) -> dict[str, str]:
    """The ``weight_map`` (key -> shard file name) of an index json, each shard checked to exist."""
    try:
        weight_map = json.loads(index.read_text())["weight_map"]
        shards = set(weight_map.values())
    except (ValueError, KeyError, TypeError, AttributeError) as err:
        raise YivlError(f"cannot read weight index {index} ({err!r}); restore it from the release") from None
    for name in sorted(shards):
        if not (index.parent / name).is_file():
            raise YivlError(
                f"weight shard {index.parent / name} named in {index.name} is missing; "
                "copy it next to the index"
            )
    return weight_map


def _check_index(index: Path, weight_map: dict[str, str], tensors: dict[str, TensorInfo]) -> None:
    """Every key the index lists must be in the shard it names."""
    for key, name in weight_map.items():
        info = tensors.get(key)
        if info is None or info.file.name != name:
            raise YivlError(f"{index.name} lists {key!r} in {name} but that shard does not hold it")


def list_tensors(file: Path, fmt: Format) -> dict[str, TensorInfo]:
    """Shape and dtype of every tensor in one weight file, read without loading the data."""
    if fmt == "bin":
        return {key: TensorInfo(file, tuple(t.shape), t.dtype) for key, t in torch_load(file).items()}
    tensors = {}
    with _safe_open(file) as f:
        for key in f.keys():  # noqa: SIM118 (safe_open is not a dict)
            info = f.get_slice(key)
            if info.get_dtype() not in ST_DTYPES:
                raise YivlError(f"{key} in {file} has dtype {info.get_dtype()}, which yivl cannot load")
            tensors[key] = TensorInfo(file, tuple(info.get_shape()), ST_DTYPES[info.get_dtype()])
    return tensors


def _safe_open(file: Path):
    try:
        return safe_open(str(file), framework="pt")
    except (SafetensorError, OSError) as err:
        raise YivlError(
            f"cannot read weights file {file} (truncated or corrupt: {err}); re-download it"
        ) from None


def torch_load(file: Path) -> dict[str, torch.Tensor]:
    """``torch.load`` a ``.bin`` state dict safely (weights_only) and lazily (memory-mapped)."""
    try:
        try:
            state = torch.load(file, map_location="cpu", weights_only=True, mmap=True)
        except RuntimeError as err:
            if "_use_new_zipfile_serialization" not in str(err):
                raise
            log.warning("%s uses the legacy torch format: reading it whole (no memory map)", file)
            state = torch.load(file, map_location="cpu", weights_only=True)
    except Exception as err:  # torch raises OSError, RuntimeError, UnpicklingError, ... for bad files
        reason = str(err).splitlines()[0] if str(err) else type(err).__name__
        raise YivlError(
            f"cannot read weights file {file} (truncated or corrupt: {reason}); re-download it"
        ) from None
    if not isinstance(state, dict) or not all(isinstance(t, torch.Tensor) for t in state.values()):
        raise YivlError(
            f"weights file {file} is not a flat state dict of tensors; re-save it with torch.save"
        )
    return state


def iter_tensors(
    weights: WeightFiles, keys: Sequence[str], reopen_bytes: int = 1 << 30
) -> Iterator[tuple[str, torch.Tensor]]:
    """Yield ``(key, tensor)`` for ``keys`` file by file. The tensors are views of a memory map:
    copy each one and drop it before the next; files are re-opened every ``reopen_bytes``."""
    by_file: dict[Path, list[str]] = {}
    for key in keys:
        by_file.setdefault(weights.tensors[key].file, []).append(key)
    for file, file_keys in by_file.items():
        for batch in _batches(file_keys, weights, reopen_bytes):
            yield from _read_batch(file, batch, weights.format)


def _batches(keys: list[str], weights: WeightFiles, limit: int) -> Iterator[list[str]]:
    batch: list[str] = []
    size = 0
    for key in keys:
        if batch and size + weights.tensors[key].nbytes > limit:
            yield batch
            batch, size = [], 0
        batch.append(key)
        size += weights.tensors[key].nbytes
    if batch:
        yield batch


def _read_batch(file: Path, keys: list[str], fmt: Format) -> Iterator[tuple[str, torch.Tensor]]:
    if fmt == "safetensors":
        with _safe_open(file) as f:
            for key in keys:
                yield key, f.get_tensor(key)
        return
    state = torch_load(file)
    for key in keys:
        yield key, state.pop(key)
    del state  # the last reference to the memory map goes with it
