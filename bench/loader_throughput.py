"""Loader and conversion throughput: yivl conversation shards against the original LLaVA-style path.

    python bench/loader_throughput.py [--records 300] [--width 640 --height 480] [--workdir DIR]

On the same generated stage-3 records (multi-turn conversations, 640x480 JPEG photos-like images) it
measures, in one process with one torch thread (what each DataLoader worker gets):

- yivl: conversation shards -> decode, pad, resize, normalize (448 px), tokenize, mask;
- LLaVA-style: the JSON list in memory + loose image files + transformers' ``CLIPImageProcessor`` +
  the original per-piece tokenization and masking (with yivl's tokenizer, which is faster than the
  slow HF one the original uses, so this baseline is if anything flattered);
- two floors: JPEG decode + one bicubic resize to 448 px, of the padded square (the plain way to the
  model's pixels) and of the image alone (the least any loader must do per image). yivl computes the
  padded square's exact pixels without the row pass over the padding, so it can beat the padded floor;
  the unpadded one bounds it;

then the CPU time of each step of the yivl path, and the conversion throughput of ``data_tools
convert`` against a plain tar copy of the same bytes. Prints Markdown tables; samples/s is the best
wall-clock round, CPU ms the best round of this process's CPU time (steadier on a shared machine). The
tokenizer is the tiny test tokenizer (nothing is downloaded).
"""

from __future__ import annotations

import argparse
import io
import json
import os
import random
import sys
import tarfile
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageDraw, ImageFilter

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from data_tools.cli import main as data_tools_main
from yivl.checkpoint.tiny import build_tiny_checkpoint
from yivl.constants import IGNORE_INDEX, IMAGE_PLACEHOLDER, IMAGE_TOKEN_INDEX
from yivl.data.chat import SYSTEM_PROMPT
from yivl.data.collate import Collator
from yivl.data.encode import SampleEncoder, decode_image
from yivl.data.images import ImageProcessor
from yivl.data.sources import ConversationShardSource, WorkerInfo
from yivl.data.streaming import StreamingDataset
from yivl.data.tokenizer import YiTokenizer

WORDS = ("the", "a", "red", "blue", "small", "large", "dog", "cat", "person", "table", "street", "car")


def photo(rng: random.Random, size: tuple[int, int]) -> bytes:
    """A JPEG with smooth gradients, shapes and mild noise (compresses like a photo, ~50-100 KB)."""
    w, h = size
    x = np.linspace(0, 1, w)[None, :, None]
    y = np.linspace(0, 1, h)[:, None, None]
    base = np.array([rng.random() for _ in range(3)]) * 255
    arr = base * (0.5 + 0.5 * x) * (0.6 + 0.4 * y) + np.random.default_rng(rng.randrange(1 << 30)).normal(
        0, 6, (h, w, 3)
    )
    img = Image.fromarray(np.clip(arr, 0, 255).astype(np.uint8))
    draw = ImageDraw.Draw(img)
    for _ in range(12):
        x0, y0 = rng.randrange(w), rng.randrange(h)
        box = (x0, y0, x0 + rng.randrange(20, 200), y0 + rng.randrange(20, 200))
        draw.ellipse(box, fill=tuple(rng.randrange(256) for _ in range(3)))
    img = img.filter(ImageFilter.GaussianBlur(1.2))
    buf = io.BytesIO()
    img.save(buf, format="JPEG", quality=90)
    return buf.getvalue()


def sentence(rng: random.Random, n: int) -> str:
    return " ".join(rng.choice(WORDS) for _ in range(n)).capitalize() + "."


def make_records(folder: Path, n: int, size: tuple[int, int]) -> Path:
    """``n`` stage-3 style records (3 question/answer turns) and their JPEG files."""
    rng = random.Random(0)
    (folder / "images").mkdir(parents=True)
    records = []
    for i in range(n):
        name = f"images/{i:06d}.jpg"
        (folder / name).write_bytes(photo(rng, size))
        turns = []
        for t in range(3):
            q = sentence(rng, rng.randrange(6, 16)).rstrip(".") + "?"
            turns.append({"from": "human", "value": f"{IMAGE_PLACEHOLDER}\n{q}" if t == 0 else q})
            turns.append(
                {"from": "gpt", "value": " ".join(sentence(rng, rng.randrange(8, 20)) for _ in range(3))}
            )
        records.append({"id": str(i), "image": name, "conversations": turns})
    path = folder / "records.json"
    path.write_text(json.dumps(records))
    return path


# -- the original LLaVA-style path (VL/llava/train/train.py, LLaVA-v0 branch as Yi-VL uses it) -----------
def expand2square(img: Image.Image, background: tuple[int, int, int]) -> Image.Image:
    width, height = img.size
    if width == height:
        return img
    side = max(width, height)
    result = Image.new(img.mode, (side, side), background)
    result.paste(img, (0, (width - height) // 2) if width > height else ((height - width) // 2, 0))
    return result


def tokenizer_image_token(prompt: str, tokenizer: YiTokenizer) -> list[int]:
    chunks = [tokenizer.encode(chunk) for chunk in prompt.split(IMAGE_PLACEHOLDER)]
    ids: list[int] = []
    for i, chunk in enumerate(chunks):
        if i:
            ids.append(IMAGE_TOKEN_INDEX)
        ids.extend(chunk)
    return ids


def llava_preprocess(conversations: list[dict], tokenizer: YiTokenizer) -> tuple[torch.Tensor, torch.Tensor]:
    """The original v0 preprocess: signal-wrapped turns, whole tokenization, per-piece masking."""
    header = f"{SYSTEM_PROMPT}\n\n"
    pieces = []
    for turn in conversations:
        role = {"human": "Human", "gpt": "Assistant"}[turn["from"]]
        value = turn["value"]
        if IMAGE_PLACEHOLDER in value:
            value = IMAGE_PLACEHOLDER + "\n" + value.replace(IMAGE_PLACEHOLDER, "").strip()
        pieces.append(f"### {role}: {value}\n")
    text = header + "".join(pieces) + "### "
    input_ids = torch.tensor(tokenizer_image_token(text, tokenizer))
    target = input_ids.clone()
    lens = [len(tokenizer_image_token(p, tokenizer)) for p in [header, *pieces]]
    target[: lens[0]] = IGNORE_INDEX
    cur = lens[0]
    for turn, n in zip(conversations, lens[1:], strict=True):
        if turn["from"] == "human":
            target[cur + 2 : cur + n] = IGNORE_INDEX
        cur += n
    return input_ids, target


def llava_style(records_path: Path, tokenizer: YiTokenizer) -> Callable[[], int]:
    from transformers import CLIPImageProcessor

    processor = CLIPImageProcessor(size={"shortest_edge": 448}, crop_size={"height": 448, "width": 448})
    background = tuple(int(x * 255) for x in processor.image_mean)
    folder = records_path.parent

    def run() -> int:
        records = json.loads(records_path.read_text())  # LazySupervisedDataset holds the whole list
        for record in records:
            image = Image.open(folder / record["image"]).convert("RGB")
            image = expand2square(image, background)
            processor.preprocess(image, return_tensors="pt")["pixel_values"][0]
            llava_preprocess(record["conversations"], tokenizer)
        return len(records)

    return run


def yivl_shards(shards: Path, tokenizer: YiTokenizer) -> Callable[[], int]:
    encoder = SampleEncoder(tokenizer, ImageProcessor(448), num_image_tokens=1024, max_length=8192)

    def run() -> int:
        dataset = StreamingDataset([ConversationShardSource(str(shards), shuffle_buffer=100)], 8, None)
        dataset.bind(encoder, Collator(448))
        dataset.worker_info = WorkerInfo()
        return sum(int(batch["input_ids"].shape[0]) for batch in dataset)

    return run


def floor(records_path: Path, padded: bool) -> Callable[[], int]:
    """JPEG decode + one bicubic resize to 448 px: of the padded square (what the model's pixels are
    computed from, so the floor for exact equality with the original) or of the image alone."""
    folder = records_path.parent
    blobs = [(folder / r["image"]).read_bytes() for r in json.loads(records_path.read_text())]

    def run() -> int:
        for data in blobs:
            img = Image.open(io.BytesIO(data)).convert("RGB")
            if padded:
                img = expand2square(img, (122, 116, 104))
            scale = 448 / max(img.size)
            img.resize((round(img.width * scale), round(img.height * scale)), Image.Resampling.BICUBIC)
        return len(blobs)

    return run


def best_rates(fns: dict[str, Callable[[], int]], repeats: int) -> dict[str, tuple[float, float]]:
    """Best samples/s (wall clock) and best CPU ms/sample of each path over ``repeats`` rounds.

    Rounds interleave the paths so a busy moment on a shared machine does not favour one of them; the
    CPU time of this process (one thread) is what a worker costs when it has a core to itself.
    """
    wall: dict[str, list[float]] = {name: [] for name in fns}
    cpu: dict[str, list[float]] = {name: [] for name in fns}
    for _ in range(repeats):
        for name, fn in fns.items():
            start, cpu_start = time.perf_counter(), time.process_time()
            n = fn()
            wall[name].append(n / (time.perf_counter() - start))
            cpu[name].append(1000 * (time.process_time() - cpu_start) / n)
    return {name: (max(wall[name]), min(cpu[name])) for name in fns}


def stage_times(records_path: Path, tokenizer: YiTokenizer, repeats: int) -> dict[str, float]:
    """CPU ms/sample of each step of the yivl path, each timed alone on the same records (best round)."""
    folder = records_path.parent
    records = json.loads(records_path.read_text())
    blobs = [(folder / r["image"]).read_bytes() for r in records]
    processor = ImageProcessor(448)
    encoder = SampleEncoder(tokenizer, processor, num_image_tokens=1024, max_length=8192)
    decoded = [decode_image(b, "bench") for b in blobs]
    resized = [processor._pad_and_resize(img) for img in decoded]
    samples = [encoder.encode(r, b, r["id"]) for r, b in zip(records, blobs, strict=True)]
    batches = [samples[i : i + 8] for i in range(0, len(samples), 8)]
    collator = Collator(448)
    steps: dict[str, tuple[Callable[[object], object], list]] = {
        "JPEG decode + EXIF + RGB": (lambda b: decode_image(b, "bench"), blobs),
        "pad + bicubic resize": (processor._pad_and_resize, decoded),
        "normalize": (processor._normalize, resized),
        "render + tokenize + mask": (lambda r: encoder.encode_text(r, "bench"), records),
        "collate (per sample)": (collator, batches),
    }
    best = {name: float("inf") for name in steps}
    for _ in range(repeats):
        for name, (fn, items) in steps.items():
            start = time.process_time()
            for item in items:
                fn(item)
            best[name] = min(best[name], 1000 * (time.process_time() - start) / len(records))
    return best


def timed(fn: Callable[[], object]) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def tar_copy(records_path: Path, out: Path) -> None:
    """A plain tar of the same bytes: each record's JSON and its JPEG file, no checks."""
    folder = records_path.parent
    with tarfile.open(out, "w") as tar:
        for i, record in enumerate(json.loads(records_path.read_text())):
            for ext, data in (
                ("json", json.dumps(record).encode()),
                ("jpg", (folder / record["image"]).read_bytes()),
            ):
                info = tarfile.TarInfo(f"{i:09d}.{ext}")
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))


def conversion(records_path: Path, model: Path, work: Path, n: int) -> list[tuple[str, float, float]]:
    mb = sum(p.stat().st_size for p in (records_path.parent / "images").iterdir()) / 1e6
    rows = [("plain tar copy", n / timed(lambda: tar_copy(records_path, work / "copy.tar")), 0.0)]
    os.environ["YIVL_DATA_TOOLS_QUIET"] = "1"
    for procs in sorted({1, os.cpu_count() or 1}):
        out = work / f"conv{procs}"
        argv = [
            "convert",
            str(records_path),
            "--out",
            str(out),
            "--model-path",
            str(model),
            "--processes",
            str(procs),
        ]
        seconds = timed(lambda argv=argv: data_tools_main(argv))
        rows.append((f"data_tools convert, {procs} process(es)", n / seconds, 0.0))
    return [(name, rate, rate * mb / n) for name, rate, _ in rows]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--records", type=int, default=300)
    parser.add_argument("--width", type=int, default=640)
    parser.add_argument("--height", type=int, default=480)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--workdir", type=Path, default=None)
    args = parser.parse_args()
    torch.set_num_threads(1)  # what a DataLoader worker process gets
    work = args.workdir or Path(tempfile.mkdtemp(prefix="yivl-loader-bench-"))
    model = build_tiny_checkpoint(work / "tiny")
    tokenizer = YiTokenizer.from_dir(model)
    records = make_records(work / "data", args.records, (args.width, args.height))
    conv_rows = conversion(records, model, work, args.records)
    paths = {
        "LLaVA-style: JSON + loose JPEG + CLIPImageProcessor": llava_style(records, tokenizer),
        "yivl: conversation shards (this loader)": yivl_shards(work / "conv1", tokenizer),
        "floor: JPEG decode + pad + bicubic resize to 448": floor(records, True),
        "floor: JPEG decode + bicubic resize to 448 (no pad)": floor(records, False),
    }
    rates = best_rates(paths, args.repeats)
    base = next(iter(rates.values()))[0]
    size = f"{args.width}x{args.height}"
    print(f"\nLoader, one process, one torch thread, {args.records} records, {size} JPEG -> 448 px")
    print(
        "\n| path | samples/s per process | ms/sample | CPU ms/sample | vs LLaVA-style |"
        "\n| --- | ---: | ---: | ---: | ---: |"
    )
    for name, (rate, cpu_ms) in rates.items():
        print(f"| {name} | {rate:.1f} | {1000 / rate:.1f} | {cpu_ms:.2f} | {rate / base:.2f}x |")
    ours, padded, raw = (rate for rate, _ in list(rates.values())[1:])
    shares = f"{100 * ours / padded:.0f}% of the padded floor, {100 * ours / raw:.0f}% of the raw one"
    print(f"\nyivl loader: {shares} (samples/s).")
    print("\n| yivl step | CPU ms/sample |\n| --- | ---: |")
    for name, ms in stage_times(records, tokenizer, args.repeats).items():
        print(f"| {name} | {ms:.2f} |")
    print("\n| conversion | records/s | image MB/s |\n| --- | ---: | ---: |")
    for name, rate, mbs in conv_rows:
        print(f"| {name} | {rate:.1f} | {mbs:.1f} |")


if __name__ == "__main__":
    main()
