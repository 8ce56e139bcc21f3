"""Indexing a LLaVA-shaped JSON list: time and peak memory of ``RecordFile`` against ``json.load``.

``RecordFile`` checks the whole list against JSON's grammar while it indexes it (a damaged file is
refused, never indexed short) and keeps two int64 offsets per record, not a Python object. This writes a
pretty-printed list shaped like ``llava_v1_5_mix665k.json`` (multi-turn image records, ``<image>``
first or last, text-only ShareGPT records with ``"model": ""``, integer ids, unicode and escapes), then
indexes it in fresh subprocesses and prints a table: seconds, records per second, peak RSS and the
growth of RSS over the interpreter's own (the index's memory; ``json.load`` holds every record).

    python bench/record_index.py [--mb 200] [--repeats 2] [--workdir DIR] [--markdown]
"""

from __future__ import annotations

import argparse
import json
import random
import subprocess
import sys
import tempfile
from pathlib import Path

from rich.console import Console
from rich.table import Table

MiB = 2**20
QUESTIONS = (
    "What are the colors of the bus in the image?",
    "Describe the scene «en détail».",
    'Is it "red"?',
)
ANSWERS = ("The bus in the image is white and red.", "Un autobús 🚌 en la calle\nwith a tab\t.", "Yes.")
PREFIXES = ("coco/train2017", "gqa/images", "ocr_vqa/images", "textvqa/train_images", "vg/VG_100K")


def llava_record(i: int, rng: random.Random) -> dict:
    """One record as mix665k holds them: an image record with 1-5 turns, or a text-only ShareGPT one."""
    turns = []
    for t in range(rng.randint(1, 5)):
        question = rng.choice(QUESTIONS)
        if t == 0 and i % 4 != 3:
            question = f"<image>\n{question}" if i % 2 else f"{question}\n<image>"
        turns += [{"from": "human", "value": question}, {"from": "gpt", "value": rng.choice(ANSWERS) * 3}]
    if i % 4 == 3:
        return {"id": i if i % 8 == 3 else f"i6IyJda_{i}", "model": "", "conversations": turns}
    return {"id": f"{i:012d}", "image": f"{rng.choice(PREFIXES)}/{i:012d}.jpg", "conversations": turns}


def write_file(path: Path, megabytes: int) -> int:
    """A pretty-printed JSON list of about ``megabytes`` MiB; returns the number of records."""
    rng = random.Random(0)
    count, size = 0, 0
    with open(path, "w", encoding="utf-8") as f:
        f.write("[\n")
        while size < megabytes * MiB:
            text = json.dumps(llava_record(count, rng), indent=4, ensure_ascii=False)
            f.write((",\n" if count else "") + text)
            size += len(text.encode("utf-8")) + 2
            count += 1
        f.write("\n]\n")
    return count


CHILD = """
import json, resource, sys, time
def rss():
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) * 1024 for line in f if line.startswith("VmHWM"))
method, path = sys.argv[1], sys.argv[2]
from yivl.data.records import RecordFile
base = rss()
start = time.perf_counter()
if method == "RecordFile":
    n = len(RecordFile(path))
else:
    with open(path, encoding="utf-8") as f:
        n = len(json.load(f))
seconds = time.perf_counter() - start
print(json.dumps({"records": n, "seconds": seconds, "peak": rss(), "base": base}))
"""


def measure(method: str, path: Path) -> dict:
    out = subprocess.run(
        [sys.executable, "-c", CHILD, method, str(path)],
        capture_output=True,
        text=True,
        check=True,
        timeout=900,
    )
    return json.loads(out.stdout.strip().splitlines()[-1])


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mb", type=int, default=200, help="size of the generated list in MiB")
    parser.add_argument("--repeats", type=int, default=2, help="runs per method (the fastest is shown)")
    parser.add_argument("--workdir", type=Path, default=None)
    parser.add_argument("--markdown", action="store_true", help="print a Markdown table")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(dir=args.workdir) as tmp:
        path = Path(tmp) / "llava_v1_5_mix665k.json"
        count = write_file(path, args.mb)
        size = path.stat().st_size
        rows = {}
        for method in ("RecordFile", "json.load"):
            runs = [measure(method, path) for _ in range(args.repeats)]
            assert all(r["records"] == count for r in runs), (method, runs, count)
            rows[method] = min(runs, key=lambda r: r["seconds"])
    base = rows["json.load"]
    title = f"{size / MiB:.0f} MiB JSON list, {count:,} records (LLaVA mix665k shape)"
    header = ("method", "seconds", "records/s", "peak RSS", "RSS growth", "time vs json.load")
    cells = [
        (
            method,
            f"{r['seconds']:.2f}",
            f"{count / r['seconds']:,.0f}",
            f"{r['peak'] / MiB:,.0f} MiB",
            f"{(r['peak'] - r['base']) / MiB:,.0f} MiB",
            f"{r['seconds'] / base['seconds']:.2f}x",
        )
        for method, r in rows.items()
    ]
    if args.markdown:
        print(f"{title}\n\n| " + " | ".join(header) + " |\n|" + "---|" * len(header))
        for row in cells:
            print("| " + " | ".join(row) + " |")
        return
    table = Table(*header, title=title)
    for row in cells:
        table.add_row(*row)
    Console().print(table)


if __name__ == "__main__":
    main()
