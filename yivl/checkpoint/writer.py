"""Write weight shards the way transformers names them, with an index json when there are several.

Safetensors files are written by streaming: the header (shapes, dtypes, offsets) first, then each
tensor's bytes as soon as ``make(key)`` returns it, so writing holds one tensor at a time, never a
shard. ``.bin`` shards (only to mimic the 01-ai release in tests and the benchmark) go through
``torch.save`` and are held one shard at a time.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from pathlib import Path

import torch

from yivl.checkpoint.shards import ST_DTYPES, Format

TensorSpec = tuple[str, tuple[int, ...], torch.dtype]
"""``(key, shape, dtype)`` of a tensor to write."""

_STEM = {"safetensors": ("model", ".safetensors"), "bin": ("pytorch_model", ".bin")}
_ST_NAMES = {dtype: name for name, dtype in ST_DTYPES.items()}


def spec_of(key: str, tensor: torch.Tensor) -> TensorSpec:
    """The spec of an existing tensor."""
    return key, tuple(tensor.shape), tensor.dtype


def nbytes(spec: TensorSpec) -> int:
    """Size in bytes of a tensor with this spec."""
    return torch.Size(spec[1]).numel() * spec[2].itemsize


def shard_names(fmt: Format, count: int) -> list[str]:
    """``model.safetensors`` or ``model-0000k-of-0000n.safetensors`` (``pytorch_model*`` for .bin)."""
    stem, ext = _STEM[fmt]
    if count == 1:
        return [stem + ext]
    return [f"{stem}-{i:05d}-of-{count:05d}{ext}" for i in range(1, count + 1)]


def plan_shards(specs: Sequence[TensorSpec], max_shard_bytes: int) -> list[list[TensorSpec]]:
    """Split specs, in order, into shards of at most ``max_shard_bytes`` (a bigger tensor gets its own)."""
    shards: list[list[TensorSpec]] = [[]]
    size = 0
    for spec in specs:
        if shards[-1] and size + nbytes(spec) > max_shard_bytes:
            shards.append([])
            size = 0
        shards[-1].append(spec)
        size += nbytes(spec)
    return shards


def write_weights(
    specs: Sequence[TensorSpec],
    make: Callable[[str], torch.Tensor],
    out_dir: Path,
    fmt: Format = "safetensors",
    max_shard_bytes: int = 5 * 2**30,
) -> list[Path]:
    """Write the tensors ``specs`` lists (in order) as shards + index; return the shard paths.

    ``make(key)`` returns the tensor (any device), called when it is written, so a caller can
    generate or fetch tensors one at a time.
    """
    shards = plan_shards(specs, max_shard_bytes)
    names = shard_names(fmt, len(shards))
    for shard, name in zip(shards, names, strict=True):
        if fmt == "safetensors":
            write_safetensors(out_dir / name, shard, make)
        else:
            torch.save({key: _standalone(make(key)) for key, _, _ in shard}, out_dir / name)
    if len(shards) > 1:
        weight_map = {spec[0]: name for shard, name in zip(shards, names, strict=True) for spec in shard}
        index = {"metadata": {"total_size": sum(map(nbytes, specs))}, "weight_map": weight_map}
        stem, ext = _STEM[fmt]
        (out_dir / f"{stem}{ext}.index.json").write_text(json.dumps(index, indent=2) + "\n")
    return [out_dir / name for name in names]


def write_safetensors(path: Path, specs: Sequence[TensorSpec], make: Callable[[str], torch.Tensor]) -> None:
    """One safetensors file (format spec: 8-byte little-endian header length, JSON header, raw data),
    with ``{"format": "pt"}`` metadata, which transformers 4.x requires."""
    header: dict[str, dict] = {"__metadata__": {"format": "pt"}}
    offset = 0
    for key, shape, dtype in specs:
        size = nbytes((key, shape, dtype))
        header[key] = {
            "dtype": _ST_NAMES[dtype],
            "shape": list(shape),
            "data_offsets": [offset, offset + size],
        }
        offset += size
    raw = json.dumps(header, separators=(",", ":")).encode()
    raw += b" " * (-len(raw) % 8)  # the data starts 8-byte aligned, as the reference writer does
    with open(path, "wb") as f:
        f.write(len(raw).to_bytes(8, "little") + raw)
        for key, shape, dtype in specs:
            tensor = make(key).detach()
            if tuple(tensor.shape) != tuple(shape) or tensor.dtype != dtype:
                raise ValueError(f"{key}: got {tuple(tensor.shape)} {tensor.dtype}, planned {shape} {dtype}")
            f.write(tensor.cpu().contiguous().reshape(-1).view(torch.uint8).numpy().data)


def _standalone(tensor: torch.Tensor) -> torch.Tensor:
    """A contiguous CPU tensor that owns its storage (torch.save would write a whole shared storage)."""
    tensor = tensor.detach().cpu().contiguous()
    if tensor.untyped_storage().nbytes() != tensor.nbytes:
        tensor = tensor.clone()
    return tensor
