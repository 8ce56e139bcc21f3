"""The GPU suite's non-training rows, one per call; each prints one JSON line on stdout.

    python bench/gpu_rows.py matmul [--smoke]              # measured dense matmul rate (FLOP/s)
    python bench/gpu_rows.py build OUT [--smoke]           # random Yi-VL-6B-shaped checkpoint (bf16)
    python bench/gpu_rows.py generate MODEL --batches 1,8 [--smoke]   # generated tokens/s per batch size

``--smoke``: the tiny preset in fp32 on the CPU, seconds per row (the suite's self-test).
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
SHARD_BYTES = 2 * 2**30


def device_and_dtype(smoke: bool) -> tuple[torch.device, torch.dtype]:
    return (torch.device("cpu"), torch.float32) if smoke else (torch.device("cuda"), torch.bfloat16)


def matmul_rate(smoke: bool) -> dict:
    """Best FLOP/s of a square matmul (8192 bf16 on the GPU; 512 fp32 on the CPU in smoke mode)."""
    device, dtype = device_and_dtype(smoke)
    n, repeats = (512, 5) if smoke else (8192, 50)
    a, b = torch.randn(n, n, device=device, dtype=dtype), torch.randn(n, n, device=device, dtype=dtype)
    best = float("inf")
    for _ in range(3):
        torch.matmul(a, b)
        if device.type == "cuda":
            torch.cuda.synchronize()
        start = time.perf_counter()
        for _ in range(repeats):
            torch.matmul(a, b)
        if device.type == "cuda":
            torch.cuda.synchronize()
        best = min(best, (time.perf_counter() - start) / repeats)
    name = torch.cuda.get_device_name() if device.type == "cuda" else "cpu"
    return {"flops_per_s": 2 * n**3 / best, "chip": name, "dtype": str(dtype).removeprefix("torch.")}


def build(out: Path, smoke: bool) -> dict:
    """Random weights with the Yi-VL-6B shapes (tiny in smoke mode), initialized on the GPU and written
    in the published layout; the tiny tokenizer (its ids fit any vocabulary)."""
    from yivl.checkpoint.save import save_pretrained
    from yivl.checkpoint.tiny_tokenizer import train_tiny_tokenizer
    from yivl.data.images import ImageProcessor
    from yivl.data.tokenizer import YiTokenizer
    from yivl.models.presets import preset
    from yivl.models.yivl import YiVL

    device, dtype = device_and_dtype(smoke)
    config = preset("tiny" if smoke else "yi_vl_6b")
    start = time.perf_counter()
    torch.manual_seed(0)
    with torch.device(device):
        model = YiVL(config).to(dtype).eval()
    model = model.cpu()
    with tempfile.TemporaryDirectory() as tmp:
        train_tiny_tokenizer(tmp)
        tokenizer = YiTokenizer.from_dir(tmp)
        save_pretrained(
            model, out, tokenizer, ImageProcessor(size=config.image_size), max_shard_bytes=SHARD_BYTES
        )
    params = sum(p.numel() for p in model.parameters())
    return {"params": params, "seconds": time.perf_counter() - start}


def generation_rates(model_dir: Path, batches: list[int], smoke: bool, new_tokens: int) -> dict:
    """Generated tokens/s of greedy decoding per batch size (prompts with one image each), each after a
    warm-up call; ``new_tokens`` per answer (no stop string: random weights would stop at random)."""
    from yivl.checkpoint.load import load_pretrained
    from yivl.data.chat import Turn
    from yivl.models.generation import GenerationSettings, generate_full
    from yivl.serving.engine import Engine

    device, dtype = device_and_dtype(smoke)
    loaded = load_pretrained(model_dir, dtype=dtype, device=device)
    engine = Engine(loaded)
    side = loaded.config.image_size
    image = torch.zeros(3, side, side, dtype=dtype, device=device)
    settings = GenerationSettings(temperature=0.0, top_k=None, max_new_tokens=new_tokens, stop=())
    rates = {}
    for batch in batches:
        prompts = [
            engine.prompt_ids([Turn("human", f"Describe picture {i} in detail.")], has_image=True)
            for i in range(batch)
        ]
        seconds, tokens = 0.0, 0
        for _ in range(2):  # the first call warms up kernels and the allocator
            _sync(device)
            start = time.perf_counter()
            answers = generate_full(loaded.model, loaded.tokenizer, prompts, [image] * batch, settings)
            _sync(device)
            seconds, tokens = time.perf_counter() - start, sum(a.num_tokens for a in answers)
        rates[str(batch)] = {"tokens": tokens, "seconds": seconds, "tokens_per_s": tokens / seconds}
    peak = torch.cuda.max_memory_allocated() if device.type == "cuda" else 0
    return {"batches": rates, "peak_bytes": peak}


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("row", choices=("matmul", "build", "generate"))
    parser.add_argument("path", nargs="?", type=Path)
    parser.add_argument("--batches", default="1,8", help="comma-separated batch sizes")
    parser.add_argument("--new-tokens", type=int, default=128)
    parser.add_argument("--smoke", action="store_true")
    args = parser.parse_args(argv)
    if args.row == "matmul":
        result = matmul_rate(args.smoke)
    elif args.row == "build":
        result = build(args.path, args.smoke)
    else:
        batches = [int(b) for b in args.batches.split(",")]
        result = generation_rates(args.path, batches, args.smoke, args.new_tokens)
    print(json.dumps(result), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
