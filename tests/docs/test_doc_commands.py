"""Every shell command of README.md and docs/*.md runs as written (tiny model, generated files) or is
skipped for a reason that the test checks; a new command that is neither fails. See doc_commands.py."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.docs.doc_commands import (
    ROOT,
    SKIPPED,
    _is_template,
    commands_in,
    doc_commands,
    run_order,
    runnable,
    skip_problem,
    stdin_for,
)
from tests.docs.fixtures import SETUP, copy_project, write_fixtures


def test_commands_are_read_as_a_shell_reads_them() -> None:
    text = "```bash\n# a comment\npython a.py x=1 \\\n    y='a # b'   # why\n\npip x && python b.py\n```\n"
    text += "```python\nprint(1)\n```\n"
    assert [(c.where, c.text) for c in commands_in(text, "X.md")] == [
        ("X.md:3", "python a.py x=1 y='a # b'"),
        ("X.md:6", "pip x && python b.py"),
    ]


def test_a_script_block_is_one_entry_named_by_its_job() -> None:
    text = "```bash\n#!/bin/bash\n#SBATCH --job-name=prep\nset -e\npython a.py\n```\n"
    text += "```bash\n#!/bin/sh\necho hi\n```\n"
    assert [(c.where, c.text) for c in commands_in(text, "X.md")] == [
        ("X.md:2", "#!/bin/bash script, #SBATCH --job-name=prep"),
        ("X.md:8", "#!/bin/sh script"),
    ]


def test_every_skip_is_listed_with_a_reason_that_holds() -> None:
    documented = {c.text for c in doc_commands()}
    problems = [f"{cmd}: {why}" for cmd in SKIPPED if (why := skip_problem(cmd))]
    stale = [cmd for cmd in SKIPPED if cmd not in documented]
    assert problems == [] and stale == []


def test_every_command_that_is_not_skipped_can_be_run() -> None:
    for command in doc_commands():
        if command.text not in SKIPPED:
            argv = runnable(command.text, Path("/w"))
            assert argv[0] == "python", f"{command.where}: neither run nor skipped: {command.text}"
            assert not _is_template(command.text), f"{command.where}: a template, not skipped: {command.text}"


def test_a_run_command_is_rewritten_only_by_the_tables() -> None:
    line = "pip install -e . && python train.py model=yi_vl_6b model.path=/models/Yi-VL-6B \"x='/data/a'\""
    assert runnable(line, Path("/w")) == [
        "python",
        "train.py",
        "model=tiny",
        "model.path=/w/models/Yi-VL-6B",
        "x='/w/data/a'",
        "trainer.max_epochs=1",
        "trainer.limit_train_batches=2",
        "trainer.limit_val_batches=1",
        "val_generation.limit=2",
        "data.num_workers=0",
    ]


def _plan(work: Path) -> list[dict]:
    """The setup commands, then each distinct runnable documented command once, in run order."""
    seen: dict[str, list[str]] = {}
    for command in doc_commands():
        if command.text not in SKIPPED:
            seen.setdefault(command.text, []).append(command.where)
    steps = [{"argv": runnable(c, work), "stdin": None, "where": "setup", "text": c} for c in SETUP]
    ordered = sorted(seen, key=lambda text: run_order(" ".join(runnable(text, work))))
    for text in ordered:
        steps.append(
            {"argv": runnable(text, work), "stdin": stdin_for(text), "where": seen[text], "text": text}
        )
    return steps


@pytest.mark.slow
def test_documented_commands_run_as_written(tmp_path: Path) -> None:
    work = tmp_path / "project"
    copy_project(ROOT, work)
    write_fixtures(work)
    plan = _plan(work)
    (tmp_path / "plan.json").write_text(json.dumps(plan))
    env = {**os.environ, "PYTHONPATH": str(work), "YIVL_ROOT": str(work), "CUDA_VISIBLE_DEVICES": ""}
    with open(tmp_path / "log.txt", "w") as log:
        subprocess.run(
            [
                sys.executable,
                str(work / "tests/docs/run_commands.py"),
                str(tmp_path / "plan.json"),
                str(tmp_path / "results.json"),
            ],
            cwd=work,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            timeout=1200,
            check=False,
        )
    results = json.loads((tmp_path / "results.json").read_text())
    log_text = (tmp_path / "log.txt").read_text()
    failed = [
        f"{step['where']}: {step['text']} -> rc={result['rc']}"
        for step, result in zip(plan, results, strict=False)
        if result["rc"] != 0
    ]
    assert len(results) == len(plan) and failed == [], "\n".join(failed) + "\n\n" + log_text[-20000:]
