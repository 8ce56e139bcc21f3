"""Configuration that checks itself and one vocabulary: bad values and mistyped keys get one line before
any heavy import; old spellings keep working with one notice; train.py speaks evaluate.py's names."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir

from data_tools.cli import main as data_tools
from tests.checkpoint.peft_adapters import make_llm_adapter
from tests.data.corpus import write_good_corpus
from tests.evaluation.task_files import task_records, write_images, write_jsonl
from yivl.checkpoint import export, tiny
from yivl.config.argv import EntryPoint, nearest_keys, prepare
from yivl.config.schema import Choice, Field, Int, Number, check
from yivl.config.schemas import validate
from yivl.config.vocabulary import TRAIN_SYNONYMS
from yivl.errors import YivlError

ROOT = Path(__file__).resolve().parents[1]
CONFIGS = ROOT / "configs"
TRAIN = EntryPoint("train.py", CONFIGS, "train", synonyms=TRAIN_SYNONYMS)
EVALUATE = EntryPoint("evaluate.py", CONFIGS, "eval")


def cli(script: str, *args: str, cwd: Path = ROOT) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, str(ROOT / script), *args], capture_output=True, text=True, timeout=300, cwd=cwd
    )


def composed(name: str, *overrides: str):
    with initialize_config_dir(str(CONFIGS), version_base="1.3"):
        return compose(name, overrides=[f"paths.root_dir={ROOT}", *overrides])


BAD = [  # (command line, the one line on stderr after "error: ")
    ("train.py trainer.max_steps=abc", "trainer.max_steps=abc: expected an integer (or -1 for no limit)"),
    ("train.py data.batch_size=0", "data.batch_size=0 must be an integer >= 1"),
    ("train.py experiment=lora finetune=lora finetune.lora.r=0", "finetune.lora.r=0 must be an integer >= 1"),
    (
        "train.py trainer.max_step=3",
        "unknown key 'trainer.max_step'; did you mean trainer.max_steps or trainer.max_epochs?",
    ),
    ("evaluate.py chekpoint=x", "unknown key 'chekpoint'; did you mean model.path?"),
    ("evaluate.py fingerprint=all", "fingerprint='all'; choose sample or full"),
    (
        "infer.py temperature=0",
        "unknown key 'temperature'; did you mean generation.temperature or web.temperature?",
    ),
    ("infer.py generation.top_p=2", "generation.top_p=2 must be in (0, 1] or null"),
    ("infer.py api.port=http", "api.port=http is not a TCP port; use 1-65535"),
    (
        "infer.py mode=api api.allow_file_urls=true",
        "api.allow_file_urls was removed: local image files are off unless "
        "api.allowed_local_media_path=[DIR] names the folders they may come from",
    ),
]


@pytest.mark.parametrize(("command", "line"), BAD)
def test_a_bad_value_or_key_is_one_line_and_exit_2(command: str, line: str, tmp_path: Path) -> None:
    result = cli(*command.split(), cwd=tmp_path)
    assert result.returncode == 2, result.stderr
    assert result.stderr == f"error: {line}\n"
    assert "Traceback" not in result.stderr and not list(tmp_path.iterdir())  # nothing started


def test_the_check_runs_before_torch_is_imported() -> None:
    code = (
        "import sys\n"
        "from hydra import compose, initialize_config_dir\n"
        "from yivl.config.argv import EntryPoint, prepare\n"
        "from yivl.config.schemas import validate\n"
        "from yivl.errors import YivlError\n"
        f"entry = EntryPoint('train.py', __import__('pathlib').Path({str(CONFIGS)!r}), 'train')\n"
        "prepare(['data.batch_size=0', 'model=tiny'], entry)\n"
        f"with initialize_config_dir({str(CONFIGS)!r}, version_base='1.3'):\n"
        "    cfg = compose('train', overrides=['data.batch_size=0'])\n"
        "try:\n"
        "    validate(cfg, 'train')\n"
        "except YivlError as err:\n"
        "    print(err, 'torch' in sys.modules, 'lightning' in sys.modules, 'transformers' in sys.modules)\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120, cwd=ROOT
    )
    assert result.stdout == "data.batch_size=0 must be an integer >= 1 False False False\n", result.stderr


def test_sweeps_additions_deletions_groups_and_hydra_keys_pass_untouched() -> None:
    argv = [
        "-m",
        "module.optimizer.lr=1e-5,2e-5",
        "model=tiny,yi_vl_6b",
        "+extra_key=1",
        "++seed=3",
        "~tags",
        "hydra.run.dir=somewhere",
        "hydra/launcher=basic",
        "data.train.0.split=val",
        "--cfg",
        "job",
    ]
    assert prepare(argv, TRAIN) == argv
    with pytest.raises(YivlError, match=r"^unknown key 'module.optimizer.learning_rate'"):
        prepare(["-m", "model=tiny,yi_vl_6b", "module.optimizer.learning_rate=1,2"], TRAIN)
    assert prepare(["--help", "no_such_key=1"], TRAIN) == ["--help", "no_such_key=1"]  # Hydra's help


def test_train_takes_evaluates_names_for_the_run_folder_device_and_dtype() -> None:
    argv = prepare(["output_dir=runs/x", "device=cuda:1", "dtype=bfloat16"], TRAIN)
    trainer = ["trainer.accelerator=gpu", "trainer.devices=[1]", "trainer.precision=bf16-mixed"]
    assert argv == ["hydra.run.dir=runs/x", *trainer]
    assert prepare(["-m", "output_dir=runs/s", "device=cpu", "dtype=float32"], TRAIN) == [
        "-m",
        "hydra.sweep.dir=runs/s",
        "trainer.accelerator=cpu",
        "trainer.precision=32-true",
    ]
    cfg = composed("train", *argv[1:])
    assert (cfg.trainer.accelerator, list(cfg.trainer.devices), cfg.trainer.precision) == (
        "gpu",
        [1],
        "bf16-mixed",
    )
    with pytest.raises(YivlError, match=r"^dtype=int8: use one of auto, float32, "):
        prepare(["dtype=int8"], TRAIN)


def test_old_keys_move_to_the_new_ones_with_one_notice_each(capsys) -> None:
    cfg = composed("infer", "model_path=/models/a", "base_model=/models/base")
    validate(cfg, "infer")
    assert (cfg.model.path, cfg.model.base, cfg.model_path, cfg.base_model) == (
        "/models/a",
        "/models/base",
        None,
        None,
    )
    assert (
        capsys.readouterr().err
        == "note: model_path= is now model.path=\nnote: base_model= is now model.base=\n"
    )
    validate(cfg, "infer")
    assert capsys.readouterr().err == ""  # moved once: a second check says nothing


def test_evaluate_gives_the_same_loss_under_the_old_and_new_key(
    tiny_checkpoint: Path, tmp_path: Path
) -> None:
    records = task_records("loss", write_images(tmp_path, 2), n=2)
    tasks = f"tasks=[loss:{write_jsonl(tmp_path / 'loss.jsonl', records)}]"
    quiet = [
        "progress=false",
        "chart=false",
        "num_workers=0",
        "threads=null",
        "bootstrap_iters=20",
        "batch_check=0",
    ]
    summaries = []
    for key in ("checkpoint", "model.path"):
        out = tmp_path / key
        result = cli("evaluate.py", f"{key}={tiny_checkpoint}", tasks, f"output_dir={out}", *quiet)
        assert result.returncode == 0, result.stderr
        notes = [line for line in result.stderr.splitlines() if line.startswith("note:")]
        assert notes == (["note: checkpoint= is now model.path="] if key == "checkpoint" else [])
        summaries.append(json.loads((out / "summary.json").read_text()))
    old, new = (s["tasks"]["loss"] for s in summaries)
    assert old["nll"] == new["nll"] and old["n_tokens"] == new["n_tokens"] > 0
    assert summaries[0]["checkpoint"]["path"] == summaries[1]["checkpoint"]["path"]


def test_data_tools_take_the_old_model_flag_with_a_notice(
    tiny_checkpoint: Path, tmp_path: Path, capsys
) -> None:
    data = write_good_corpus(tmp_path, 4)
    assert data_tools(["validate", str(data), "--model-path", str(tiny_checkpoint)]) == 0
    new = capsys.readouterr()
    assert data_tools(["validate", str(data), "--model", str(tiny_checkpoint)]) == 0
    old = capsys.readouterr()
    assert old.err == new.err + "note: --model is now --model-path\n" and old.out == new.out


def test_export_overwrite_replaces_only_an_earlier_export(
    tiny_checkpoint: Path, tmp_path: Path, capsys
) -> None:
    adapter = make_llm_adapter(tiny_checkpoint, tmp_path / "adapter")
    out = tmp_path / "out"
    capsys.readouterr()
    assert export.main([str(adapter), str(out), "--base-model", str(tiny_checkpoint)]) == 0
    notes = [line for line in capsys.readouterr().err.splitlines() if line.startswith("note:")]
    assert notes == ["note: --base-model is now --model-base"]
    assert export.main([str(adapter), str(out), "--model-base", str(tiny_checkpoint)]) == 2
    refused = f"error: export directory {out} is not empty; choose another one or pass --overwrite\n"
    assert capsys.readouterr().err == refused
    (out / "stale.txt").write_text("from the first export")
    assert export.main([str(adapter), str(out), "--model-base", str(tiny_checkpoint), "--overwrite"]) == 0
    assert (out / "config.json").is_file() and not (out / "stale.txt").exists()
    assert not (tmp_path / ".out.partial").exists()
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "notes.txt").write_text("keep me")
    capsys.readouterr()
    assert export.main([str(adapter), str(mine), "--overwrite"]) == 2
    assert capsys.readouterr().err.startswith(f"error: {mine} holds no export (no config.json")
    assert (mine / "notes.txt").read_text() == "keep me"


def test_the_tiny_builder_names_its_overwrite_option(tmp_path: Path, capsys) -> None:
    assert tiny.main([str(tmp_path / "m")]) == 0
    capsys.readouterr()
    assert tiny.main([str(tmp_path / "m")]) == 2
    folder = (tmp_path / "m").resolve()
    assert capsys.readouterr().err == (
        f"error: output directory {folder} is not empty; choose an empty one or pass --overwrite\n"
    )
    assert tiny.main([str(tmp_path / "m"), "--overwrite"]) == 0


def test_fields_name_the_key_the_value_and_what_it_accepts() -> None:
    schema = {
        "a.n": Int(1),
        "a.steps": Int(-1, hint="(or -1 for no limit)"),
        "a.x": Number(above=0, null=True),
        "a.flag": Field("bool"),
        "a.mode": Choice("one", "two"),
        "a.threads": Int(1, null=True, also=("auto",)),
    }
    good = {"a": {"n": 1, "steps": -1, "x": None, "flag": False, "mode": "two", "threads": "auto"}}
    check(good, schema)
    cases = {
        ("n", True): "a.n=true: expected an integer",
        ("n", 2.5): "a.n=2.5: expected an integer",
        ("steps", -2): "a.steps=-2 must be an integer >= -1 (or -1 for no limit)",
        ("x", 0): "a.x=0 must be > 0",
        ("x", "big"): "a.x=big: expected a number (or null)",
        ("flag", "yes"): "a.flag=yes: expected true or false",
        ("mode", "three"): "a.mode=three: use one of one, two",
        ("threads", "many"): "a.threads=many: expected an integer (or 'auto' or null)",
    }
    for (key, value), message in cases.items():
        with pytest.raises(YivlError) as err:
            check({"a": {**good["a"], key: value}}, schema)
        assert str(err.value) == message
    check({"a": {}}, schema)  # keys the composed config lacks are not checked


def test_nearest_keys_prefer_the_same_name_and_map_old_spellings() -> None:
    paths = ["model", "model.path", "checkpoint", "generation", "generation.temperature", "web.temperature"]
    assert nearest_keys("temperature", paths, {}) == ["generation.temperature", "web.temperature"]
    assert nearest_keys("chekpoint", paths, {"checkpoint": "model.path"}) == ["model.path"]
    assert nearest_keys("zzz", paths, {}) == []
    with pytest.raises(YivlError, match=r"^unknown key 'resumee'; did you mean resume\?$"):
        prepare(["resumee=true"], EVALUATE)


def shipped_configs() -> list[tuple[str, list[str]]]:
    """Every config group option of train.py (with the stage a fine-tune needs), and eval's presets."""
    found = []
    for group in ("model", "experiment", "finetune", "strategy", "data", "trainer", "logger", "debug"):
        for path in sorted((CONFIGS / group).glob("*.yaml")):
            stage = {"lora": ["experiment=lora"], "qlora": ["experiment=qlora"]}
            found.append(
                (
                    "train",
                    [f"{group}={path.stem}", *(stage.get(path.stem, []) if group == "finetune" else [])],
                )
            )
    found += [
        ("train", [f"experiment={p.stem}", "model=yi_vl_6b"])
        for p in sorted((CONFIGS / "experiment").glob("*.yaml"))
    ]
    return [*found, ("eval", []), ("eval", ["eval=synthetic"]), ("infer", [])]


@pytest.mark.parametrize(("name", "overrides"), shipped_configs())
def test_every_shipped_config_fits_its_schema(name: str, overrides: list[str]) -> None:
    validate(composed(name, *overrides), name)
