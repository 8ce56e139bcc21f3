"""Overrides Hydra's grammar cannot read, sweeps without -m and overrides Hydra cannot apply (+key on a
set key, ~key on a missing one) are one ``error:`` line with the form to write, exit 2, before any
model loads; the quoted forms the messages show are read back as the value that was meant."""

from __future__ import annotations

import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir

from yivl.config.argv import EntryPoint, prepare
from yivl.config.vocabulary import TRAIN_SYNONYMS
from yivl.errors import YivlError

ROOT = Path(__file__).resolve().parents[1]
CONFIGS = ROOT / "configs"
ENTRIES = {
    "infer.py": EntryPoint("infer.py", CONFIGS, "infer"),
    "train.py": EntryPoint("train.py", CONFIGS, "train", synonyms=TRAIN_SYNONYMS),
}
QUOTING = '(docs/cli.md, "Quoting")'

CASES = [  # (script, argv, the line on stderr after "error: ")
    (
        "infer.py",
        ["question=héllo", "image=assets/shapes.png"],
        f"cannot read the override question=héllo: quote the value, e.g. 'question=\"héllo\"' {QUOTING}",
    ),
    (
        "infer.py",
        ["question=what's this"],
        "cannot read the override question=what's this: quote the value, "
        f'e.g. "question=\\"what\'s this\\"" {QUOTING}',
    ),
    (
        "infer.py",
        ['question=say "hi"'],
        'cannot read the override question=say "hi": quote the value, '
        f'e.g. "question=\'say \\"hi\\"\'" {QUOTING}',
    ),
    (
        "infer.py",
        ["api.port=["],
        "cannot read the override api.port=[: close the brackets of the list, or quote the value, "
        f"e.g. 'api.port=\"[\"' {QUOTING}",
    ),
    (
        "infer.py",
        ["justakey"],
        "cannot read the argument justakey: an override is key=value "
        "(python infer.py --cfg job lists the keys)",
    ),
    (
        "infer.py",
        ["+api.port=1"],
        "+api.port=1 adds api.port, which already exists: write api.port=1 to set it "
        "(or ++api.port=1 to set or add it)",
    ),
    (
        "infer.py",
        ["~model"],
        "cannot delete model: infer.py's defaults list has no model group "
        "(python infer.py --cfg job shows the configuration)",
    ),
    (
        "infer.py",
        ["mode=api", "api.api_key=ключé"],
        # a credential is never repeated in an error line
        "cannot read the override api.api_key=<hidden>: quote the value, "
        f"e.g. 'api.api_key=\"...\"' {QUOTING}",
    ),
    (
        "infer.py",
        ["question=what is this, really"],
        "question=what is this, really reads as a sweep over several values: quote the value, "
        "e.g. 'question=\"what is this, really\"' (a list is key=[a,b]; a sweep needs -m)",
    ),
    (
        "train.py",
        ["task_name=héllo"],
        f"cannot read the override task_name=héllo: quote the value, e.g. 'task_name=\"héllo\"' {QUOTING}",
    ),
    (
        "train.py",
        ["task_name=what's this"],
        "cannot read the override task_name=what's this: quote the value, "
        f'e.g. "task_name=\\"what\'s this\\"" {QUOTING}',
    ),
    (
        "train.py",
        ["output_dir=runs/é"],
        "cannot read the override output_dir=runs/é: quote the value, "
        f"e.g. 'output_dir=\"runs/é\"' {QUOTING}",
    ),
    (
        "train.py",
        ["trainer.max_steps=["],
        "cannot read the override trainer.max_steps=[: close the brackets of the list, or quote the "
        f"value, e.g. 'trainer.max_steps=\"[\"' {QUOTING}",
    ),
    (
        "train.py",
        ["justakey"],
        "cannot read the argument justakey: an override is key=value "
        "(python train.py --cfg job lists the keys)",
    ),
    (
        "train.py",
        ["+seed=1"],
        "+seed=1 adds seed, which already exists: write seed=1 to set it (or ++seed=1 to set or add it)",
    ),
    (
        "train.py",
        ["~no_such_key"],
        "cannot delete no_such_key: it is not set in train.py's configuration "
        "(write no_such_key=null to clear a value; python train.py --cfg job lists the keys)",
    ),
    (  # any other composition error: Hydra's first line
        "train.py",
        ["~tags=foo"],
        "Could not delete from config. The value of 'tags' is ['demo'] and not foo "
        "(python train.py --cfg job shows the configuration)",
    ),
    (  # Hydra's config options: a config or folder that is not there
        "train.py",
        ["-cn", "stage9"],
        f"-cn stage9: no stage9.yaml in {CONFIGS}; the configs there: eval, infer, train",
    ),
    (
        "train.py",
        ["--config-path=nothere"],
        f"-cp nothere: there is no folder {ROOT / 'nothere'} (-cp names the folder of the primary config)",
    ),
    (
        "infer.py",
        ["-cd", "/nonexistent/configs"],
        "-cd /nonexistent/configs: there is no folder /nonexistent/configs "
        "(-cd names a folder of more configs)",
    ),
    (
        "train.py",
        ["-cn=experiment/stage9"],
        f"-cn experiment/stage9: no experiment/stage9.yaml in {CONFIGS / 'experiment'}; the configs there: "
        "experiment/lora, experiment/qlora, experiment/stage1, experiment/stage2, experiment/stage3",
    ),
    (
        "train.py",
        ["-cp", str(CONFIGS / "model")],
        f"-cp: no train.yaml in {CONFIGS / 'model'} (train.py reads train unless -cn names another); "
        "the configs there: tiny, yi_vl_34b, yi_vl_6b",
    ),
]


@pytest.mark.parametrize(("script", "argv", "line"), CASES)
def test_an_override_hydra_cannot_take_is_one_line_and_exit_2(
    script: str, argv: list[str], line: str, tmp_path: Path
) -> None:
    result = subprocess.run(
        [sys.executable, str(ROOT / script), *argv],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=ROOT if "image=assets/shapes.png" in argv else tmp_path,
    )
    assert result.returncode == 2, result.stderr
    assert result.stderr == f"error: {line}\n"
    assert "Traceback" not in result.stderr and "hydra.cc" not in result.stderr
    assert not list(tmp_path.iterdir())  # nothing started


@pytest.mark.parametrize(
    ("script", "argv", "line"), [c for c in CASES if "e.g. " in c[2] and "<hidden>" not in c[2]]
)
def test_the_form_a_message_shows_reads_back_as_the_value_meant(
    script: str, argv: list[str], line: str
) -> None:
    entry = ENTRIES[script]
    with pytest.raises(YivlError) as caught:
        prepare(argv, entry)
    assert str(caught.value) == line
    shown = re.search(r"e\.g\. (.+?) (\(docs|\(a list)", line).group(1)
    (written,) = shlex.split(shown)  # what the shell passes for the form shown
    meant = next(arg for arg in argv if arg.partition("=")[0] == written.partition("=")[0])
    fixed = prepare([written if arg == meant else arg for arg in argv], entry)
    key, _, value = meant.partition("=")
    if key == "output_dir":
        key = "hydra.run.dir"
        fixed = [arg for arg in fixed if arg.startswith("hydra.run.dir=")]
    with initialize_config_dir(str(CONFIGS), version_base="1.3"):
        cfg = compose(entry.config_name, overrides=fixed, return_hydra_config=True)
    assert str(select(cfg, key)) == value


def select(cfg, key: str):
    for part in key.split("."):
        cfg = cfg[part]
    return cfg


FINE = [
    ['question="héllo"', "image=assets/shapes.png"],
    ["question='say \"hi\"'"],
    ["question=What is the cat doing?"],  # spaces and '?' need no quotes for Hydra
    ["-m", "question=a,b"],
    ["-cn", "infer.yaml"],  # Hydra takes the name with or without .yaml
    ["--config-name=infer"],
    ["-cp", "configs", "-cd", str(CONFIGS / "model")],  # a relative -cp is read from the script's folder
    ["-cp", "nothere", "-cp", "configs"],  # the last one counts, as in Hydra
    ["-cd", "/nonexistent", "--config-dir", str(CONFIGS)],
    [f"--config-path={CONFIGS}", "newkey=2"],  # another config folder: its keys are not ours to check
]


@pytest.mark.parametrize("argv", FINE)
def test_forms_hydra_reads_pass_untouched(argv: list[str]) -> None:
    assert prepare(argv, ENTRIES["infer.py"]) == argv


def test_additions_deletions_and_a_quoted_synonym_pass_in_train() -> None:
    argv = ["+extra_key=1", "++seed=3", "~tags", "output_dir='runs/é'"]
    assert prepare(argv, ENTRIES["train.py"]) == [*argv[:3], "hydra.run.dir='runs/é'"]


def test_the_quoting_table_in_the_docs_reads_back_as_its_values() -> None:
    from hydra.core.override_parser.overrides_parser import OverridesParser

    text = (ROOT / "docs" / "cli.md").read_text(encoding="utf-8").partition("## Quoting")[2]
    rows = re.findall(r"^\| `([^`]+)`[^|]*\| `([^`]+)`", text, re.M)
    assert len(rows) >= 6
    parser = OverridesParser.create()
    for value, written in rows:
        (arg,) = shlex.split(written)
        assert parser.parse_overrides([arg])[0].value() == value, written
