"""Peak memory and time of the training loss and its backward: chunked CE vs the supervised-only head.

2,048 supervised positions with the Yi-VL-6B shapes (hidden size 4096, vocabulary 64000), random fp32
weights, on the CPU. ``full`` is what ``yivl.models.loss.supervised_loss`` does with
``model.loss_chunk_size=0`` (the LM head over every supervised position, then one fp32 cross-entropy);
``fused N`` is ``chunked_cross_entropy`` with that chunk size on a plain head (gradients taken in the
forward, ``yivl.models.fused_ce``); ``recompute N`` is the module path it keeps for wrapped, quantized
or ZeRO-3 heads (each chunk's logits recomputed in the backward). The head weight is frozen as in LoRA
and stages 1-2 (a trained head adds the same 1 GB weight gradient to every variant: ``--train-head``).

Each variant runs in a fresh process: memory is that process's peak RSS minus its RSS after the weight
and the hidden states are allocated (large tensors are mmap-ed, so RSS follows them); time is the wall
time of one forward + backward.

    python bench/loss_memory.py [--tokens 2048] [--fused 256,512,1024] [--recompute 256] [--train-head]
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from yivl.models.loss import chunked_cross_entropy, recomputed_cross_entropy
from yivl.models.presets import preset

MiB = 2**20


def rss_bytes() -> int:
    """This process's resident set size now."""
    pages = int(Path("/proc/self/statm").read_text().split()[1])
    return pages * resource.getpagesize()


LOSSES = {
    "full": lambda head, hidden, targets, chunk: F.cross_entropy(
        head(hidden).float(), targets, reduction="sum"
    ),
    "fused": chunked_cross_entropy,
    "recompute": recomputed_cross_entropy,
}


def measure(tokens: int, variant: str, chunk: int, train_head: bool) -> dict:
    """One variant in this process: peak RSS growth over the loss + backward, and its time."""
    config = preset("yi_vl_6b")
    hidden_size, vocab = config.llm_hidden_size, int(config.llm["vocab_size"])
    torch.manual_seed(0)
    head = nn.Linear(hidden_size, vocab, bias=False)
    nn.init.normal_(head.weight, std=0.02)
    head.weight.requires_grad_(train_head)
    hidden = torch.randn(tokens, hidden_size, requires_grad=True)
    targets = torch.randint(0, vocab, (tokens,))
    before = rss_bytes()
    start = time.perf_counter()
    loss = LOSSES[variant](head, hidden, targets, chunk)
    loss.backward()
    seconds = time.perf_counter() - start
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # KiB on Linux
    return {"peak_mib": (peak - before) / MiB, "seconds": seconds, "loss": float(loss)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tokens", type=int, default=2048)
    parser.add_argument("--fused", default="256,512,1024", help="chunk sizes of the fused path")
    parser.add_argument("--recompute", default="256", help="chunk sizes of the recompute path")
    parser.add_argument("--train-head", action="store_true")
    parser.add_argument("--markdown", action="store_true")
    parser.add_argument("--one", default=None, help=argparse.SUPPRESS)  # child: one variant, NAME:CHUNK
    args = parser.parse_args()
    if args.one is not None:
        variant, chunk = args.one.split(":")
        print(json.dumps(measure(args.tokens, variant, int(chunk), args.train_head)))
        return
    variants = [("full", 0)]
    variants += [("fused", int(c)) for c in args.fused.split(",") if c]
    variants += [("recompute", int(c)) for c in args.recompute.split(",") if c]
    rows = []
    for variant, chunk in variants:
        cmd = [sys.executable, __file__, "--one", f"{variant}:{chunk}", "--tokens", str(args.tokens)]
        cmd += ["--train-head"] if args.train_head else []
        out = subprocess.run(cmd, capture_output=True, text=True, check=True, timeout=1800).stdout
        rows.append((f"{variant} {chunk}" if chunk else "full (supervised-only head)", json.loads(out)))
    full = rows[0][1]
    print(f"{args.tokens} supervised tokens, hidden 4096, vocab 64000, fp32, head trains: {args.train_head}")
    print("| variant | peak MiB | vs full | time s | vs full | loss |")
    print("|---|---|---|---|---|---|")
    for name, r in rows:
        print(
            f"| {name} | {r['peak_mib']:.0f} | {r['peak_mib'] / full['peak_mib']:.2f}x | "
            f"{r['seconds']:.1f} | {r['seconds'] / full['seconds']:.2f}x | {r['loss']:.1f} |"
        )


if __name__ == "__main__":
    main()
