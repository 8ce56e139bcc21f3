"""A Lightning callback for bench/gpu_suite.py: per-step time, supervised tokens, model FLOPs, peak memory.

Added to a train.py run from the command line (``bench/`` on PYTHONPATH)::

    +callbacks.gpu_timer._target_=gpu_step_timer.StepTimer +callbacks.gpu_timer.out=row.json

Model FLOPs per step (what MFU counts; gradient-checkpointing recompute excluded): for each part
(vision tower, projector, LLM) and each token it processes, 2 x params forward, 2 x params backward
when a gradient flows through it, and 2 x trainable params for the weight gradients; plus attention,
4 x layers x width x sequence^2 per sample forward (x3 with a backward); a packed sample counts its
own length, not its row's.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import lightning as L
import torch

IGNORE = -100


def _sync() -> None:
    if torch.cuda.is_available():
        torch.cuda.synchronize()


def part_params(model: torch.nn.Module) -> dict[str, tuple[int, int]]:
    """(matmul params, trainable params) of the vision tower, projector and LLM (no embedding lookup)."""
    counts = {}
    for part in ("vision_tower", "mm_projector", "llm"):
        total = trainable = 0
        for name, p in getattr(model, part).named_parameters():
            if "embed_tokens" in name:
                continue
            numel = p.ds_numel if hasattr(p, "ds_numel") else p.numel()  # ZeRO-3 empties partitioned params
            total += numel
            trainable += numel if p.requires_grad else 0
        counts[part] = (total, trainable)
    return counts


def sample_lengths(batch: dict, image_tokens: int) -> torch.Tensor:
    """Tokens the LLM sees per sample [S]: a row's, or each packed sample's (``sequence_ids``)."""
    width = ((batch["input_ids"] < 0) * (image_tokens - 1) + 1) * batch["attention_mask"]
    if "sequence_ids" not in batch:
        return width.sum(dim=1)
    segments = batch["sequence_ids"]
    per = torch.zeros(segments.shape[0], int(segments.max()) + 2, dtype=width.dtype, device=width.device)
    per.scatter_add_(1, segments + 1, width)  # column 0 collects the padding (-1)
    return per[:, 1:][per[:, 1:] > 0]


def step_flops(model: torch.nn.Module, batch: dict, counts: dict[str, tuple[int, int]]) -> float:
    """Model FLOPs of one micro-batch (see the module docstring)."""
    config = model.config
    images = 0 if batch.get("pixel_values") is None else int(batch["pixel_values"].shape[0])
    seq = sample_lengths(batch, config.num_image_tokens)
    vit_seq = config.num_image_tokens + 1
    tokens = {"vision_tower": images * vit_seq, "mm_projector": images * config.num_image_tokens}
    tokens["llm"] = int(seq.sum())
    flops, grad_flows = 0.0, False
    for part in ("vision_tower", "mm_projector", "llm"):
        total, trainable = counts[part]
        grad_flows = grad_flows or trainable > 0
        flops += tokens[part] * (2 * total + (2 * total if grad_flows else 0) + 2 * trainable)
    llm, vit = config.llm, config.vision
    factor = 3 if grad_flows else 1
    flops += factor * 4 * llm["num_hidden_layers"] * llm["hidden_size"] * float((seq.float() ** 2).sum())
    vit_attn = 4 * vit["num_hidden_layers"] * vit["hidden_size"] * images * vit_seq**2
    flops += (3 if counts["vision_tower"][1] else 1) * vit_attn
    return flops


class StepTimer(L.Callback):
    """Times optimizer steps after ``warmup`` of them; writes a JSON summary to ``out`` on rank 0."""

    def __init__(self, out: str, warmup: int = 2) -> None:
        self.out, self.warmup = Path(out), warmup
        self.times: list[float] = []
        self.tokens: list[int] = []
        self.flops: list[float] = []
        self.counts: dict[str, tuple[int, int]] = {}
        self._start = 0.0

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.counts = part_params(pl_module.model)
        if torch.cuda.is_available():
            torch.cuda.reset_peak_memory_stats()

    def on_train_batch_start(self, trainer: L.Trainer, pl_module: L.LightningModule, batch, idx: int) -> None:
        _sync()
        self._start = time.perf_counter()

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, out, batch, idx) -> None:
        _sync()
        self.times.append(time.perf_counter() - self._start)
        self.tokens.append(int((batch["labels"][:, 1:] != IGNORE).sum()))
        self.flops.append(step_flops(pl_module.model, batch, self.counts))

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if not trainer.is_global_zero:
            return
        timed = slice(self.warmup, None) if len(self.times) > self.warmup else slice(None)
        seconds = sum(self.times[timed])
        peak = torch.cuda.max_memory_allocated() if torch.cuda.is_available() else 0
        summary = {
            "steps": len(self.times[timed]),
            "step_s": seconds / max(1, len(self.times[timed])),
            "tokens_per_s": sum(self.tokens[timed]) / seconds if seconds else 0.0,
            "flops_per_s": sum(self.flops[timed]) / seconds if seconds else 0.0,
            "peak_bytes": peak,
            "trainable": sum(t for _, t in self.counts.values()),
        }
        self.out.write_text(json.dumps(summary))
