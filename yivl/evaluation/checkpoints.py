"""Any checkpoint -> a loaded model: the published layout, a ``train.py`` checkpoint, an adapter export
or a plain peft adapter.

Training checkpoints and adapter exports hold only the trained tensors; they are rebuilt on their base
model by ``yivl.checkpoint.trained`` (LoRA adapters merged for speed). A plain
peft adapter is merged into its base model by ``yivl.checkpoint.peft_adapter``. Every kind gets a
fingerprint, so a summary names exactly which weights it scored.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from yivl.checkpoint.layout import CONFIG
from yivl.checkpoint.load import LoadedModel, load_pretrained
from yivl.checkpoint.peft_adapter import (
    YIVL_EXPORT_META,
    PeftAdapter,
    is_peft_adapter,
    load_peft_adapter,
    read_peft_adapter,
    refuse_named_adapters,
)
from yivl.checkpoint.plan import RunPlan
from yivl.errors import YivlError

ADAPTER_META = YIVL_EXPORT_META
SAMPLE_BYTES = 1 << 20
WEIGHT_SUFFIXES = (".safetensors", ".bin", ".ckpt", ".pt", ".json", ".model")


@dataclass
class CheckpointInfo:
    """What was loaded: ``kind`` (published, lightning, adapter, peft), paths and the fingerprint."""

    path: str
    kind: str
    fingerprint: str
    base_model: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)
    source: tuple[RunPlan, dict[str, torch.Tensor]] | None = field(default=None, repr=False)
    peft: PeftAdapter | None = field(default=None, repr=False)

    def describe(self) -> dict[str, Any]:
        """The JSON shape written into summary.json and the run manifest."""
        return {
            "path": self.path,
            "kind": self.kind,
            "fingerprint": self.fingerprint,
            "base_model": self.base_model,
            **self.extra,
        }


def checkpoint_kind(path: Path) -> str:
    """``published`` (config.json), ``adapter`` (yivl_adapter.json), ``peft`` (adapter_config.json) or
    ``lightning`` (.ckpt, DeepSpeed)."""
    if not path.exists():
        raise YivlError(
            f"checkpoint not found: {path}; give a model folder (published layout), a train.py .ckpt, "
            "an adapter export or a peft adapter folder"
        )
    if path.is_dir():
        if (path / ADAPTER_META).is_file():
            return "adapter"
        if is_peft_adapter(path):  # before config.json: LLaVA's LoRA folders hold one too
            return "peft"
        if (path / CONFIG).is_file():
            return "published"
        if (path / "latest").is_file() or (path / "checkpoint").is_dir():
            return "lightning"
        refuse_named_adapters(path)
        raise YivlError(
            f"{path} is neither a published-layout model (no config.json), an adapter export (no "
            f"{ADAPTER_META}), a peft adapter (no adapter_config.json) nor a DeepSpeed checkpoint; "
            "point model.path= at one of them"
        )
    return "lightning"


def describe_checkpoint(path: Path, base_model: str | None, full_hash: bool) -> CheckpointInfo:
    """Kind, base model and fingerprint. A training checkpoint's tensors are read here (once) and kept
    in ``info.source`` for :func:`load_checkpoint`; published weights are not read."""
    kind = checkpoint_kind(path)
    if kind == "published":
        return CheckpointInfo(str(path.resolve()), kind, fingerprint_files(path, full_hash))
    if kind == "peft":
        adapter = read_peft_adapter(path, base_model, "model.base=DIR")
        digest = _fingerprint_pair(path, adapter.base, full_hash)
        info = CheckpointInfo(str(path.resolve()), kind, digest, str(adapter.base))
        info.peft = adapter
        return info
    from yivl.checkpoint.trained import read_run  # peft & co. only for trained checkpoints

    plan, tensors = read_run(path, base_model)
    base = Path(plan.model.path).expanduser()
    if checkpoint_kind(base) != "published":
        raise YivlError(f"base model {base} is not a published-layout folder; pass model.base=DIR")
    digest = _fingerprint_pair(path, base, full_hash)
    extra = {"stage": plan.stage, "image_size": plan.image_size}
    info = CheckpointInfo(str(path.resolve()), kind, digest, str(base.resolve()), extra)
    info.source = (plan, tensors)
    return info


def _fingerprint_pair(path: Path, base: Path, full_hash: bool) -> str:
    """One fingerprint for trained files over a base model: the sha256 of both folders' fingerprints."""
    digest = hashlib.sha256()
    digest.update(fingerprint_files(path, full_hash).encode())
    digest.update(fingerprint_files(base, full_hash).encode())
    return digest.hexdigest()


def load_checkpoint(info: CheckpointInfo, device: torch.device, dtype: torch.dtype) -> LoadedModel:
    """Load the model described by ``info`` onto ``device`` in ``dtype``, in eval mode, without grads."""
    if info.kind == "published":
        loaded = load_pretrained(info.path, dtype=dtype, device=device)
    elif info.kind == "peft":
        adapter = info.peft or read_peft_adapter(Path(info.path), info.base_model, "model.base=DIR")
        info.peft = None  # merged into the model; do not keep the adapter tensors too
        loaded = load_peft_adapter(adapter, dtype, device)
    else:
        loaded = _rebuild(info)
        loaded.model.to(device=device, dtype=dtype)
    loaded.model.requires_grad_(False)
    loaded.model.eval()
    return loaded


def _rebuild(info: CheckpointInfo) -> LoadedModel:
    """A training checkpoint or adapter export on its base model (at the run's resolution, with its image
    processor), LoRA merged into the weights."""
    from yivl.checkpoint.trained import model_from_plan, read_run
    from yivl.models.lora import merge_lora

    plan, tensors = info.source or read_run(Path(info.path), info.base_model)
    info.source = None  # the tensors are copied into the model; do not keep a second copy
    loaded = model_from_plan(plan, tensors)
    merge_lora(loaded.model.llm)
    return loaded


def fingerprint_files(path: Path, full: bool = False) -> str:
    """sha256 over a checkpoint's files: names, sizes and contents.

    ``full=False`` hashes small files whole and, of large weight files, 1 MiB at the start, middle and
    end (seconds instead of minutes for a 6B model; any retraining changes those bytes).
    """
    files = [path] if path.is_file() else sorted(p for p in path.rglob("*") if p.is_file())
    digest = hashlib.sha256()
    for file in files:
        if file.suffix not in WEIGHT_SUFFIXES and file.name not in ("latest",):
            continue
        size = file.stat().st_size
        rel = file.name if file == path else file.relative_to(path).as_posix()
        digest.update(f"{rel}\0{size}\0".encode())
        with open(file, "rb") as f:
            if full or size <= 3 * SAMPLE_BYTES:
                for chunk in iter(lambda f=f: f.read(1 << 24), b""):
                    digest.update(chunk)
            else:
                for offset in (0, size // 2, size - SAMPLE_BYTES):
                    f.seek(offset)
                    digest.update(f.read(SAMPLE_BYTES))
    return digest.hexdigest()
