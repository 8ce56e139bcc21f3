"""The GPU suite: Yi-VL-6B shapes, random bf16 weights, one GPU; one table (run it via bench/gpu_suite.sh).

Rows, each a subprocess with its own time limit inside an overall budget (a failing or hanging row
costs at most its limit, and prints its status instead of figures):

- the chip's measured bf16 matmul rate (8192^3), which MFU is measured against;
- a random Yi-VL-6B-shaped checkpoint, initialized on the GPU and written in the published layout;
- greedy generation tokens/s at batch 1 and 8;
- stage 3 (everything trains) under ``strategy=fsdp`` (FSDP2) and ``strategy=deepspeed_zero3``,
  ``experiment=lora`` and ``experiment=qlora`` (when bitsandbytes is there), all through train.py on
  the synthetic data at 448 px: step time, supervised tokens/s, MFU and peak GPU memory;
- stage 3 under FSDP2 again with ``data.packing=true`` (rows of 4096 tokens, one row a batch, about
  as many tokens as the padded row's batch), so MFU is measured packed and padded. MFU counts each
  packed sample's own attention, not the row's: the work that is needed, whatever the kernel does.

``--smoke`` runs the same rows on the tiny model on the CPU (the suite's self-test, no GPU needed).
"""

from __future__ import annotations

import argparse
import datetime
import importlib.util
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
BENCH = ROOT / "bench"
GiB = 2**30
OVER_BUDGET_MARKER = BENCH / "wheels" / "bitsandbytes.over-budget"


@dataclass
class Row:
    name: str
    status: str = "not run"
    figures: dict = field(default_factory=dict)


@dataclass
class Settings:
    smoke: bool
    slowdown: float  # row time limits are for the GPU; the CPU smoke test gets this factor more
    work: Path
    deadline: float
    batch_size: int
    steps: int
    warmup: int
    new_tokens: int


def slug(name: str) -> str:
    """A row name as a file and Hydra-safe folder name."""
    return re.sub(r"[^A-Za-z0-9]+", "_", name).strip("_")


def subprocess_env() -> dict[str, str]:
    """The project and bench/ (for the step-timer callback) importable, whether installed or not."""
    path = os.pathsep.join([str(ROOT), str(BENCH), os.environ.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    return {**os.environ, "PYTHONPATH": path, "HYDRA_FULL_ERROR": "0", "TOKENIZERS_PARALLELISM": "false"}


def failure(rc: int, output: str) -> str:
    """One status line from a failed row's output."""
    lines = [line.strip() for line in output.splitlines() if line.strip()]
    if any("OutOfMemoryError" in line or "CUDA out of memory" in line for line in lines):
        return "does not fit one GPU (CUDA out of memory)"
    errors = [line for line in lines if line.startswith("error: ")]
    if not errors:  # a traceback: its exception line (Hydra prints a hint after it)
        errors = [line for line in lines if re.match(r"^[\w.]+(Error|Exception)\b", line)]
    last = errors[-1] if errors else (lines[-1] if lines else "no output")
    return f"failed (exit {rc}): {last[:160]}"


def run_row(row: Row, command: list[str], limit: float, settings: Settings) -> str:
    """Run ``command`` within ``limit`` seconds and the suite's deadline; its stdout, or "" on failure
    (then ``row.status`` says why)."""
    remaining = settings.deadline - time.monotonic()
    limit = min(limit * settings.slowdown, remaining)
    if remaining < 5:
        row.status = "skipped: the suite's time budget was spent"
        return ""
    log = settings.work / f"{slug(row.name)}.log"
    with open(log, "w+", encoding="utf-8") as out:
        try:
            proc = subprocess.run(
                command, cwd=ROOT, env=subprocess_env(), stdout=out, stderr=subprocess.STDOUT, timeout=limit
            )
        except subprocess.TimeoutExpired:
            row.status = f"timeout after {limit:.0f} s"
            return ""
        out.seek(0)
        text = out.read()
    if proc.returncode != 0:
        row.status = failure(proc.returncode, text)
        return ""
    row.status = "ok"
    return text


def last_json(text: str) -> dict:
    return json.loads([line for line in text.splitlines() if line.startswith("{")][-1])


PACKED_ROWS_PER_BATCH = 1  # a 4096-token row holds ~3.5 synthetic samples at 1024 image tokens


def train_command(settings: Settings, model_dir: Path, name: str, overrides: list[str]) -> list[str]:
    """train.py on the random model: a few steps, no validation, checkpoint or export; the step timer on."""
    batch = PACKED_ROWS_PER_BATCH if "data.packing=true" in overrides else settings.batch_size
    data = [
        f"data.{split}.0.{key}={n}"
        for split in ("train", "val")
        for key, n in (("num_train", 8 * settings.batch_size), ("num_val", 4))
    ]
    hardware = ["trainer=cpu", "module.image_size=null"] if settings.smoke else ["trainer=gpu"]
    return [
        sys.executable,
        "train.py",
        f"model={'tiny' if settings.smoke else 'yi_vl_6b'}",
        f"model.path={model_dir}",
        "model.build_if_missing=false",
        *overrides,
        "data=synthetic",
        f"paths.data_dir={settings.work / 'data'}",
        *data,
        f"data.batch_size={batch}",
        f"global_batch_size={batch}",
        *hardware,
        f"trainer.max_steps={settings.steps}",
        "trainer.limit_val_batches=0",
        "val_generation=none",
        "export.enabled=false",
        "logger=none",
        "~callbacks.model_checkpoint",
        "~callbacks.loss_plot",
        "extras.print_config=false",
        f"hydra.run.dir={settings.work / 'runs' / slug(name)}",
        "+callbacks.gpu_timer._target_=gpu_step_timer.StepTimer",
        f"+callbacks.gpu_timer.out={settings.work / (slug(name) + '.json')}",
        f"+callbacks.gpu_timer.warmup={settings.warmup}",
    ]


TRAIN_ROWS = (
    ("stage 3, FSDP2", ["experiment=stage3", "strategy=fsdp"], 90),
    ("stage 3, FSDP2, packed", ["experiment=stage3", "strategy=fsdp", "data.packing=true"], 90),
    ("stage 3, ZeRO-3", ["experiment=stage3", "strategy=deepspeed_zero3"], 100),
    ("LoRA", ["experiment=lora"], 70),
    ("QLoRA", ["experiment=qlora"], 70),
)


def train_rows(settings: Settings, model_dir: Path, peak_flops: float | None) -> list[Row]:
    rows = []
    for name, overrides, limit in TRAIN_ROWS:
        row = Row(name)
        rows.append(row)
        if name == "QLoRA" and importlib.util.find_spec("bitsandbytes") is None:
            wheel = "wheel over budget" if OVER_BUDGET_MARKER.exists() else "bitsandbytes not installed"
            row.status = f"skipped: {wheel}"
            continue
        if not run_row(row, train_command(settings, model_dir, name, overrides), limit, settings):
            continue
        result = json.loads((settings.work / (slug(name) + ".json")).read_text())
        mfu = result["flops_per_s"] / peak_flops if peak_flops else None
        row.figures = {
            "step_s": result["step_s"],
            "tokens_per_s": result["tokens_per_s"],
            "mfu": mfu,
            "peak_gib": result["peak_bytes"] / GiB,
        }
    return rows


def run_suite(settings: Settings) -> tuple[list[Row], dict]:
    smoke = ["--smoke"] if settings.smoke else []
    rows_py = [sys.executable, str(BENCH / "gpu_rows.py")]
    matmul, build = Row("matmul rate"), Row("random checkpoint")
    info = {}
    text = run_row(matmul, [*rows_py, "matmul", *smoke], 45, settings)
    peak = None
    if text:
        info = last_json(text)
        peak = info["flops_per_s"]
        matmul.figures = {"tflops": peak / 1e12}
    model_dir = settings.work / "model"
    text = run_row(build, [*rows_py, "build", str(model_dir), *smoke], 120, settings)
    if not text:
        names = ["generation, batch 1", "generation, batch 8", *(name for name, _, _ in TRAIN_ROWS)]
        return [matmul, build, *(Row(n, "skipped: no random checkpoint") for n in names)], info
    build.figures = {"params": last_json(text)["params"]}
    gen = [Row("generation, batch 1"), Row("generation, batch 8")]
    command = [*rows_py, "generate", str(model_dir), "--batches", "1,8", "--new-tokens"]
    text = run_row(gen[0], [*command, str(settings.new_tokens), *smoke], 60, settings)
    gen[1].status = gen[0].status
    if text:
        result = last_json(text)
        for row, batch in zip(gen, ("1", "8"), strict=True):
            row.figures = {
                "gen_tokens_per_s": result["batches"][batch]["tokens_per_s"],
                "peak_gib": result["peak_bytes"] / GiB,
            }
    # generation first: it is cheap, and the training rows share what is left of the budget
    return [matmul, build, *gen, *train_rows(settings, model_dir, peak)], info


def cell(value: float | None, fmt: str) -> str:
    return "" if value is None else format(value, fmt)


def print_table(rows: list[Row], info: dict, settings: Settings, seconds: float) -> None:
    chip = info.get("chip", "unknown")
    rate = info.get("flops_per_s")
    model = "tiny (smoke test, CPU, fp32)" if settings.smoke else "Yi-VL-6B shapes, random bf16 weights"
    print(f"\nGPU suite, {datetime.date.today().isoformat()}: {chip}; {model}")
    print(f"measured {info.get('dtype', '?')} matmul rate: {cell(rate and rate / 1e12, '.3g')} TFLOP/s")
    print(
        f"training: data.batch_size={settings.batch_size}, {settings.steps} steps, the first "
        f"{settings.warmup} untimed; generation: {settings.new_tokens} new tokens per answer; "
        f"suite wall time {seconds:.0f} s\n"
    )
    print("| row | status | step (s) | supervised tok/s | MFU | peak memory (GiB) | generated tok/s |")
    print("|---|---|---|---|---|---|---|")
    for row in rows:
        f = row.figures
        extra = f" ({f['params'] / 1e6:,.1f} M params)" if "params" in f else ""
        extra += f" ({f['tflops']:.3g} TFLOP/s)" if "tflops" in f else ""
        mfu = f.get("mfu")
        print(
            f"| {row.name} | {row.status}{extra} | {cell(f.get('step_s'), '.3f')} | "
            f"{cell(f.get('tokens_per_s'), ',.1f')} | {cell(mfu and 100 * mfu, '.1f')}{'%' if mfu else ''} | "
            f"{cell(f.get('peak_gib'), '.1f')} | {cell(f.get('gen_tokens_per_s'), ',.1f')} |"
        )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--smoke", action="store_true", help="tiny model on the CPU (self-test)")
    parser.add_argument("--workdir", type=Path, help="scratch folder (default: a new temporary one)")
    parser.add_argument("--budget-s", type=float, help="overall time budget (default 450 s, smoke 1500 s)")
    args = parser.parse_args(argv)
    work = args.workdir or Path(tempfile.mkdtemp(prefix="yivl-gpu-suite-"))
    work.mkdir(parents=True, exist_ok=True)
    budget = args.budget_s or (1500.0 if args.smoke else 450.0)
    start = time.monotonic()
    settings = Settings(
        smoke=args.smoke,
        slowdown=4.0 if args.smoke else 1.0,
        work=work.resolve(),
        deadline=start + budget,
        batch_size=2 if args.smoke else 4,
        steps=3 if args.smoke else 6,
        warmup=1 if args.smoke else 2,
        new_tokens=4 if args.smoke else 128,
    )
    rows, info = run_suite(settings)
    print_table(rows, info, settings, time.monotonic() - start)
    print(f"\nrow logs in {settings.work}")
    return 0 if all(r.status in ("ok",) or r.status.startswith("skipped: ") for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
