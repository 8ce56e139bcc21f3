"""Generation throughput of the evaluator against calling ``generate`` one sample at a time.

Both sides answer the same VQA prompts (training chat format + the short-answer suffix) greedily with
the same token budget. The baseline is the naive loop: load the image, build the prompt, call
``generate`` on that one sample. The evaluator batches (left padding) and decodes images in DataLoader
workers. Reports samples/s and generated tokens/s side by side; target: >= 3x at batch 8 on CPU.

    python bench/eval_throughput.py [--checkpoint DIR] [--samples 64] [--batch-sizes 1,8] [--markdown]
    python bench/eval_throughput.py --preset yi_vl_6b --device cuda --samples 64   # random 6B weights

Without ``--checkpoint`` the tiny random model is used (built on first use); its answers are noise, so
every sample runs to the token budget, which makes the token counts comparable.
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from yivl.checkpoint.load import LoadedModel, load_pretrained  # noqa: E402
from yivl.data.chat import Turn  # noqa: E402
from yivl.evaluation.records import SampleWriter  # noqa: E402
from yivl.evaluation.registry import build_items  # noqa: E402
from yivl.evaluation.runner import RunOptions, TaskRunner, TokenCounter  # noqa: E402
from yivl.evaluation.sources import read_task_file  # noqa: E402
from yivl.evaluation.tasks import TaskSpec  # noqa: E402
from yivl.models.generation import GenerationSettings, generate  # noqa: E402
from yivl.serving.engine import Engine  # noqa: E402

SUFFIX = "\nAnswer the question using a single word or phrase."


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--checkpoint", type=Path, default=None, help="published-layout model (default: tiny)"
    )
    parser.add_argument("--preset", default=None, help="random weights of a preset instead (e.g. yi_vl_6b)")
    parser.add_argument(
        "--data", type=Path, default=ROOT / "data" / "synthetic", help="synthetic dataset root"
    )
    parser.add_argument("--samples", type=int, default=152, help="VQA samples (152: the whole file)")
    parser.add_argument("--max-new-tokens", default="16,64", help="token budgets (VQA 16, captions 64)")
    parser.add_argument("--batch-sizes", default="1,8")
    parser.add_argument("--num-workers", type=int, default=1)
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: as evaluate.py)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--markdown", action="store_true", help="print only the Markdown table")
    return parser.parse_args(argv)


def load_model(args: argparse.Namespace) -> LoadedModel:
    """The checkpoint, the tiny model, or a random model of ``--preset`` (bf16 on CUDA)."""
    device = torch.device(args.device)
    dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    if args.preset is not None:
        return random_model(args.preset, device, dtype)
    path = args.checkpoint or ROOT / ".cache" / "tiny-yi-vl"
    if not path.exists():
        from yivl.checkpoint.tiny import build_tiny_checkpoint

        build_tiny_checkpoint(path)
    return load_pretrained(path, dtype=dtype, device=device)


def random_model(name: str, device: torch.device, dtype: torch.dtype) -> LoadedModel:
    """Random weights with a preset's shapes, the tiny tokenizer (its ids fit any vocabulary)."""
    from yivl.checkpoint.tiny_tokenizer import train_tiny_tokenizer
    from yivl.data.images import ImageProcessor
    from yivl.data.tokenizer import YiTokenizer
    from yivl.models.presets import preset
    from yivl.models.yivl import YiVL

    config = preset(name)
    with torch.device(device):
        model = YiVL(config).to(dtype).eval()
    folder = Path(tempfile.mkdtemp())
    train_tiny_tokenizer(folder)
    processor = ImageProcessor(size=config.image_size)
    return LoadedModel(model, YiTokenizer.from_dir(folder), processor, config, folder)


def run_evaluator(
    loaded: LoadedModel, spec: TaskSpec, items: list, batch_size: int, workers: int
) -> tuple[float, int]:
    """Seconds and generated tokens of the evaluator over ``items``."""
    runner = TaskRunner(loaded, RunOptions(batch_size=batch_size, num_workers=workers))
    with tempfile.TemporaryDirectory() as tmp, SampleWriter(Path(tmp) / "s.jsonl") as writer:
        start = time.perf_counter()
        outcome = runner.run(spec, items, {}, writer)
        return time.perf_counter() - start, outcome.gen_tokens


def run_one_at_a_time(loaded: LoadedModel, items: list, max_new_tokens: int) -> tuple[float, int]:
    """Seconds and generated tokens of the naive loop: load image, build prompt, ``generate`` it alone."""
    engine = Engine(loaded)
    settings = GenerationSettings(temperature=0.0, top_k=None, max_new_tokens=max_new_tokens)
    tokens = 0
    start = time.perf_counter()
    for item in items:
        pixels = engine.pixels(item.image.path)
        ids = engine.prompt_ids([Turn("human", item.question)], has_image=True)
        counter = TokenCounter(loaded.tokenizer)
        generate(loaded.model, counter, [ids], [pixels], settings)
        tokens += sum(c or 0 for c in counter.per_row(1))
    return time.perf_counter() - start, tokens


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.device == "cpu":  # both sides run with evaluate.py's threads=auto (one core per worker)
        torch.set_num_threads(args.threads or max(1, (os.cpu_count() or 1) - args.num_workers))
    from yivl.data.synthetic import ensure_synthetic_dataset

    data = ensure_synthetic_dataset(args.data)
    loaded = load_model(args)
    rows = []
    for budget in (int(b) for b in args.max_new_tokens.split(",")):
        options = {"max_new_tokens": budget, "norm": "evalai", "suffix": SUFFIX}
        spec = TaskSpec("vqa", "vqa", data / "eval_vqa.jsonl", options)
        items = build_items("vqa", read_task_file(spec.path, limit=args.samples), options)
        run_evaluator(loaded, spec, items[:8], 8, 0)  # warm-up: allocator, kernels, lazy imports
        run_one_at_a_time(loaded, items[:2], budget)
        base_s, base_tok = run_one_at_a_time(loaded, items, budget)
        rows.append((budget, "generate, one sample at a time", 1, base_s, base_tok, base_s))
        for bs in (int(b) for b in args.batch_sizes.split(",")):
            seconds, tokens = run_evaluator(loaded, spec, items, bs, args.num_workers)
            rows.append((budget, "evaluator", bs, seconds, tokens, base_s))
    print_table(args, len(items), rows)
    return 0


def print_table(args: argparse.Namespace, n: int, rows: list) -> None:
    """The Markdown table (and, unless ``--markdown``, a line about the machine)."""
    model = args.preset or ("tiny (random)" if args.checkpoint is None else str(args.checkpoint))
    if not args.markdown:
        print(
            f"model {model}, {n} VQA samples, device {args.device}, torch threads {torch.get_num_threads()},"
        )
        print(f"{os.cpu_count()} CPUs ({platform.machine()}), DataLoader workers {args.num_workers}")
    print("| max_new_tokens | method | batch | wall s | samples/s | tokens/s | speed-up |")
    print("|---|---|---|---|---|---|---|")
    for budget, name, bs, seconds, tokens, base_s in rows:
        print(
            f"| {budget} | {name} | {bs} | {seconds:.2f} | {n / seconds:.1f} | {tokens / seconds:.0f} "
            f"| {base_s / seconds:.2f}x |"
        )


if __name__ == "__main__":
    sys.exit(main())
