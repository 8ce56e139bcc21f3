"""The shell commands of README.md and docs/*.md, and how the docs test runs each one as written.

A command is a logical line of a fenced ``bash``/``sh``/``console`` block (``\\`` continuations joined,
comments dropped). Every command is either run or listed in :data:`SKIPPED` with a reason of a kind
in :data:`SKIP_KINDS`, whose check must hold for it. Commands run in a copy of the project where the
files they name exist (see ``fixtures.py``), with exactly these changes:

- :data:`REWRITES` on each argument (no GPU, no 34B download on a CI machine);
- ``pip install ... &&`` dropped: CI installed the project before the tests (``.ci/run``);
- :data:`APPENDED` overrides at the end of every ``train.py`` command, so each run is seconds long.

Data-making commands run first (``data_tools``), then the others, then the exports and those naming
``<run>`` (the quickstart's run folder), each group in the order of the docs; so a workflow (``data_tools
laion`` -> stage 1 on its shards -> stage 2 from the stage-1 export) runs on its own output. A command
that appears twice runs once. They all run in one Python process (``run_commands.py``: the entry points
executed as ``python`` would, with their own argv and stdin), which saves torch's imports per command.
"""

from __future__ import annotations

import re
import shlex
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
DOCS = ["README.md", *sorted(str(p.relative_to(ROOT)) for p in (ROOT / "docs").glob("*.md"))]
SHELL_BLOCKS = {"bash", "sh", "console", "shell"}

REWRITES: list[tuple[str, str, str]] = [
    (r"^model=yi_vl_(6b|34b)$", "model=tiny", "the 6B/34B presets check the model's shape"),
    (r"^trainer=(gpu|multi_gpu)$", "trainer=cpu", "no GPU in CI"),
    (
        r"^strategy=\w+$",
        "strategy=auto",
        "the strategies run in 2 CPU processes in tests/training (test_fsdp2.py, test_deepspeed_train.py)",
    ),
    (r"^model\.path=\.\.\.$", "model.path=/models/Yi-VL-6B", "`...` stands for your model: the docs' own"),
    # the docs' absolute paths: /models/Yi-VL-6B and -34B hold the tiny model, /data/ the generated files
    (r"(?<![\w.])/(models|data)/", r"{root}/\1/", "the docs' absolute paths, inside the test's folder"),
]
APPENDED = [
    "trainer.max_epochs=1",
    "trainer.limit_train_batches=2",
    "trainer.limit_val_batches=1",
    "val_generation.limit=2",
    "data.num_workers=0",
]
"""Overrides added to every train.py command: two batches, one validation batch, no worker processes."""


def _ci_runs(cmd: str) -> bool:
    return cmd in (ROOT / ".ci" / "run").read_text().splitlines()


def _is_template(cmd: str) -> bool:
    return bool(re.search(r"(^| )\.\.\.( |$)|\[\.\.\.\]", cmd))


SKIP_KINDS: dict[str, tuple[str, Callable[[str], bool]]] = {
    "cuda": ("4-bit QLoRA needs CUDA (bitsandbytes)", lambda c: "experiment=qlora" in c),
    "launcher": (
        "a cluster launcher (torchrun, srun, sbatch)",
        lambda c: re.match(r"^(\w+=\S+ )*(\w+=\$\()?(torchrun|srun|sbatch) ", c) is not None,
    ),
    "scheduler": ("a SLURM batch script, run by sbatch on a cluster", lambda c: "#SBATCH --job-name=" in c),
    "bench": (
        "the GPU suite needs a GPU (tests/bench runs its --smoke mode); its wheel script downloads from PyPI",
        lambda c: c.split()[0] in ("bench/gpu_suite.sh", "bench/gpu_wheels.sh"),
    ),
    "server": (
        "a server that runs until stopped; tests/serving starts it",
        lambda c: "mode=web" in c or "mode=api" in c,
    ),
    "sglang": (
        "SGLang, another project's server: it needs a CUDA or ROCm GPU and is not a yivl dependency",
        lambda c: re.match(r"^python (-m sglang\.|sglang/)", c) is not None,
    ),
    "template": ("`...` stands for the user's own settings", _is_template),
    "ci": (".ci/run runs this very command", _ci_runs),
}

SKIPPED: dict[str, str] = {
    'pip install "torch==2.13.0" && pip install -e ".[dev]" && python -m pytest': "ci",
    "python train.py model=yi_vl_6b model.path=/models/Yi-VL-6B experiment=qlora "
    "data.train.0.path=train.json data.train.0.image_folder=images": "cuda",
    "python train.py ... hydra.run.dir=logs/train/runs/<run> ckpt_path=last": "template",
    "python evaluate.py model.path=... tasks=[...] output_dir=logs/eval/<run> resume=true": "template",
    "python infer.py mode=web model.path=/models/Yi-VL-6B": "server",
    "python infer.py mode=api model.path=/models/Yi-VL-6B": "server",
    "python train.py model=yi_vl_6b experiment=qlora trainer=gpu data.batch_size=4 "
    "data.train.0.path=/data/instruct.json data.train.0.image_folder=/data/images": "cuda",
    "python train.py model=yi_vl_34b experiment=stage1 trainer=multi_gpu strategy=deepspeed_zero3 "
    "data.batch_size=32 ...": "template",
    "python train.py model=yi_vl_34b experiment=stage2 trainer=multi_gpu strategy=deepspeed_zero3 "
    "data.batch_size=8 ...": "template",
    "python train.py model=yi_vl_34b experiment=stage3 trainer=multi_gpu strategy=deepspeed_zero3_offload "
    "data.batch_size=1 ...": "template",
    "python train.py model=yi_vl_34b experiment=lora trainer=multi_gpu strategy=deepspeed_zero2 "
    "data.batch_size=2 ...": "template",
    "python train.py model=yi_vl_34b experiment=qlora trainer=gpu data.batch_size=2 ...": "cuda",
    "python train.py hparams_search=optuna hydra.sweeper.n_trials=20 model=yi_vl_6b "
    "experiment=lora ...": "template",
    "python train.py model=yi_vl_6b experiment=stage3 ... val_generation.type=vqa "
    "val_generation.path=/data/vqav2_val_500.jsonl val_generation.limit=200 "
    "val_generation.every_n=2": "template",
    "torchrun --nnodes 2 --nproc-per-node 8 --rdzv-backend c10d --rdzv-endpoint $MAIN_HOST:29500 "
    "--rdzv-id 34b train.py model=yi_vl_34b model.path=/models/Yi-VL-34B experiment=stage3 "
    "trainer=multi_node trainer.num_nodes=2 trainer.devices=8 strategy=deepspeed_zero3 "
    "hydra.run.dir=/shared/runs/34b-stage3": "launcher",
    "python evaluate.py model.path=... tasks=[...] devices=4": "template",
    "python evaluate.py model.path=DIR tasks=[...] output_dir=logs/eval/x devices=2": "template",
    "torchrun --nnodes 2 --nproc-per-node 8 --rdzv-backend c10d --rdzv-endpoint $MAIN_HOST:29500 "
    "--rdzv-id 34b-stage3 --max-restarts 0 train.py model=yi_vl_34b model.path=/models/Yi-VL-34B "
    "experiment=stage3 trainer=multi_node trainer.num_nodes=2 trainer.devices=8 "
    "strategy=deepspeed_zero3 hydra.run.dir=/shared/runs/34b-stage3 "
    "data.train.0.path=/data/instruct.json": "launcher",
    "#!/usr/bin/env bash script, #SBATCH --job-name=yivl-34b-stage3": "scheduler",
    "bench/gpu_wheels.sh 3.11": "bench",
    "bench/gpu_suite.sh --workdir /scratch/yivl-suite": "bench",
    "bench/gpu_suite.sh --smoke": "bench",
    "DS_ACCELERATOR=cpu torchrun --standalone --nproc-per-node 2 train.py trainer=ddp_sim "
    "strategy=deepspeed_zero2 data.batch_size=4 hydra.run.dir=logs/train/zero2-cpu": "launcher",
    "#!/bin/bash script, #SBATCH --job-name=convert-mix665k": "scheduler",
    "python sglang/scripts/convert_yi_vl.py --model-path /models/yi-vl-mine": "sglang",
    "python -m sglang.launch_server --model-path /models/yi-vl-mine --chat-template yi-vl "
    "--port 30000": "sglang",
    "jobid=$(sbatch --parsable convert.sbatch)": "launcher",
    'sbatch --dependency=afterok:"$jobid" --job-name=merge-mix665k --output=logs/merge-%j.out --wrap '
    '"python -m data_tools merge --output-dir data/shards/stage3"': "launcher",
    "torchrun --standalone --nproc-per-node 4 evaluate.py model.path=... tasks=[...] "
    "output_dir=logs/eval/<run>": "template",
    "torchrun --standalone --nproc-per-node 2 evaluate.py model.path=DIR tasks=[...] "
    "output_dir=logs/eval/x": "template",
    "torchrun --standalone --nproc-per-node 2 evaluate.py model.path=DIR tasks=[...] "
    "output_dir=logs/eval/x resume=true": "template",
    "python train.py ... val_generation.type=pope val_generation.path=/data/pope/random.jsonl "
    "val_generation.name=pope_random val_generation.max_new_tokens=4": "template",
}
"""Documented commands the test does not run, each with the kind of reason (checked by the test)."""

STDIN = {"mode=chat": "What colour is the circle?\n"}
"""Input typed into interactive commands (then end of input, which ends the chat)."""


@dataclass(frozen=True)
class DocCommand:
    """One documented command: where it is (``README.md:44``) and its text, continuations joined."""

    where: str
    text: str


def _strip_comment(line: str) -> str:
    """``line`` without a trailing ``# comment`` (a ``#`` outside quotes that starts a word)."""
    quote = ""
    for i, ch in enumerate(line):
        if quote:
            quote = "" if ch == quote else quote
        elif ch in "'\"":
            quote = ch
        elif ch == "#" and (i == 0 or line[i - 1].isspace()):
            return line[:i]
    return line


def commands_in(text: str, name: str) -> list[DocCommand]:
    """The commands of the shell code blocks of one Markdown file."""
    out: list[DocCommand] = []
    for block in re.finditer(r"^```(\w*)\n(.*?)^```", text, re.S | re.M):
        if block.group(1) not in SHELL_BLOCKS:
            continue
        first = text[: block.start()].count("\n") + 2
        if block.group(2).startswith("#!"):  # a script file (e.g. for sbatch): one entry, named by its job
            out.append(DocCommand(f"{name}:{first}", script_name(block.group(2))))
            continue
        pending, start = "", first
        for offset, raw in enumerate(block.group(2).splitlines()):
            line = _strip_comment(raw).strip()
            if not pending:
                start = first + offset
            if line.endswith("\\"):
                pending += line[:-1] + " "
                continue
            command = " ".join((pending + line).split())
            pending = ""
            if command:
                out.append(DocCommand(f"{name}:{start}", command))
    return out


def script_name(script: str) -> str:
    """How a script block is listed: ``#!/bin/bash script, #SBATCH --job-name=NAME`` for a batch job."""
    job = re.search(r"^#SBATCH --job-name=(\S+)", script, re.M)
    interpreter = script.splitlines()[0]
    return f"{interpreter} script" + (f", #SBATCH --job-name={job.group(1)}" if job else "")


def doc_commands() -> list[DocCommand]:
    """Every command of README.md and docs/*.md, in reading order."""
    return [c for name in DOCS for c in commands_in((ROOT / name).read_text(encoding="utf-8"), name)]


def skip_problem(command: str) -> str | None:
    """Why the skip entry of ``command`` is not valid, or None when it is."""
    kind = SKIPPED[command]
    if kind not in SKIP_KINDS:
        return f"unknown skip kind {kind!r}"
    reason, holds = SKIP_KINDS[kind]
    return None if holds(command) else f"skipped as {kind!r} ({reason}), which is not true of it"


def runnable(command: str, root: Path) -> list[str]:
    """``command`` as the test runs it: one ``python ...`` argv, rewritten (see the module docstring)."""
    segments = [s.strip() for s in command.split(" && ")]
    kept = [s for s in segments if not s.startswith("pip install ")]
    if len(kept) != 1:
        raise ValueError(f"expected one command after the installs: {command}")
    argv = []
    for token in shlex.split(kept[0]):
        for pattern, replacement, _ in REWRITES:
            token = re.sub(pattern, replacement.replace("{root}", str(root)), token)
        argv.append(token)
    if argv[:2] == ["python", "train.py"]:
        argv += APPENDED
    return argv


def run_order(command: str) -> int:
    """Data tools first, then the others, then the exports and the commands that read the quickstart's run."""
    if "<run>" in command or command.startswith("python -m yivl.checkpoint.export "):
        return 2
    return 0 if " data_tools " in command else 1


def stdin_for(command: str) -> str | None:
    return next((text for key, text in STDIN.items() if key in command), None)
