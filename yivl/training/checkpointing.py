"""What a training checkpoint holds beyond Lightning's own state, and the checks on resume.

Checkpoints keep only trainable tensors (plus optimizer state, loops, schedulers, data position): a
LoRA checkpoint of 34B is adapter-sized. A ``yivl`` entry records which run wrote it (model size, stage,
fine-tune method, resolution) so that resuming with another model or stage is refused with the
difference spelled out, and the global RNG states of every rank, each restored on its own rank right
before the first resumed batch (dropout masks then continue as in an uninterrupted run on every rank).
"""

from __future__ import annotations

import random
from collections.abc import Mapping
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist

from yivl.checkpoint.plan import RunPlan
from yivl.errors import YivlError
from yivl.models.config import YiVLConfig

META_KEY = "yivl"
COMPARED = ("model", "stage", "finetune", "image_size", "llm_hidden_size", "llm_layers", "vision_layers")


def run_meta(plan: RunPlan, config: YiVLConfig) -> dict:
    """Identity of a training run: what must match for its checkpoint to be resumed."""
    return {
        "model": plan.model.name,
        "stage": plan.stage,
        "finetune": plan.finetune.method,
        "image_size": plan.image_size,
        "llm_hidden_size": config.llm_hidden_size,
        "llm_layers": int(config.llm["num_hidden_layers"]),
        "vision_layers": int(config.vision["num_hidden_layers"]),
    }


def check_same_run(where: str, saved: Mapping | None, current: Mapping) -> None:
    """YivlError naming each difference between a checkpoint's run and this one."""
    if saved is None:
        raise YivlError(
            f"ckpt_path={where} was not written by train.py (no '{META_KEY}' entry); pass a yivl checkpoint"
        )
    diffs = [
        f"{key} {saved.get(key)!r} (this run: {current[key]!r})"
        for key in COMPARED
        if saved.get(key) != current[key]
    ]
    if diffs:
        raise YivlError(
            f"ckpt_path={where} comes from another run: {'; '.join(diffs)}; resume with the same model and "
            "experiment, or start a new stage from an export with model.path=<export dir>"
        )


def check_state_keys(
    where: str, saved: Mapping[str, torch.Tensor], expected: Mapping[str, torch.Size]
) -> None:
    """YivlError if the checkpoint's tensors are not exactly this run's trainable parameters."""
    missing = sorted(set(expected) - set(saved))
    extra = sorted(set(saved) - set(expected))
    if missing or extra:
        parts = [f"{len(missing)} trainable tensor(s) missing (e.g. {missing[0]})"] if missing else []
        parts += [f"{len(extra)} unexpected (e.g. {extra[0]})"] if extra else []
        raise YivlError(f"ckpt_path={where} does not fit this run: {', '.join(parts)}")
    for key, shape in expected.items():
        if saved[key].shape != shape:
            raise YivlError(
                f"ckpt_path={where}: {key} has shape {list(saved[key].shape)}, this run has {list(shape)}"
            )


def peek_meta(path: Path) -> dict | None:
    """The ``yivl`` entry of a checkpoint file (or DeepSpeed folder) without reading its tensors."""
    if path.is_dir():
        from yivl.checkpoint.deepspeed_zero import zero_run_state

        return zero_run_state(path)[0]
    ckpt = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    return ckpt.get(META_KEY) if isinstance(ckpt, dict) else None


def rng_state() -> dict:
    """The global RNG states (torch, CUDA, NumPy, Python) as tensors and plain values."""
    kind, keys, pos, has_gauss, gauss = np.random.get_state()
    return {
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
        "numpy": [kind, torch.from_numpy(keys.astype(np.int64)), pos, has_gauss, gauss],
        "python": list(random.getstate()),
    }


def set_rng_state(state: Mapping) -> None:
    """Restore what :func:`rng_state` returned."""
    torch.set_rng_state(state["torch"])
    if state["cuda"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
    kind, keys, pos, has_gauss, gauss = state["numpy"]
    np.random.set_state((kind, keys.numpy().astype(np.uint32), pos, has_gauss, gauss))
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))


def rng_entry() -> dict:
    """``rng``: this rank's RNG states; ``rng_ranks``: every rank's, in rank order.

    Collective when several processes train (every rank saves, only rank 0 may write the file), so it
    runs on every rank, as Lightning's ``save_checkpoint`` does.
    """
    state = rng_state()
    ranks = [state]
    if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
        ranks = [None] * dist.get_world_size()
        dist.all_gather_object(ranks, state)
    return {"rng": state, "rng_ranks": ranks}


def rng_for_rank(saved: Mapping, rank: int, world_size: int) -> Mapping | None:
    """The RNG states rank ``rank`` resumes with: its own when the checkpoint holds one per rank of this
    world size; otherwise the saved ``rng`` (rank 0's, or a checkpoint from before per-rank states)."""
    ranks = saved.get("rng_ranks")
    if ranks is not None and len(ranks) == world_size:
        return ranks[rank]
    return saved.get("rng")
