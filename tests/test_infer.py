"""infer.py end to end: its three modes, the engine's checks, and one-line user errors."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from omegaconf import DictConfig

from tests.checkpoint.peft_adapters import edit_adapter_config, make_llava_adapter
from yivl.checkpoint import export
from yivl.data.chat import Turn, with_image_placeholder
from yivl.errors import YivlError
from yivl.models.generation import GenerationSettings
from yivl.serving.engine import Engine, Request
from yivl.serving.infer import run, run_batch

ROOT = Path(__file__).resolve().parents[1]
IMAGE = ROOT / "assets" / "shapes.png"
GREEDY = GenerationSettings(temperature=0, max_new_tokens=6)


def infer_cfg(*overrides: str) -> DictConfig:
    with initialize_config_dir(str(ROOT / "configs"), version_base="1.3"):
        return compose("infer", overrides=[f"paths.root_dir={ROOT}", *overrides])


@pytest.fixture
def engine(tiny_checkpoint: Path) -> Engine:
    return Engine.from_path(tiny_checkpoint, device="cpu", dtype="float32")


def run_cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, str(ROOT / "infer.py"), *args], capture_output=True, text=True, timeout=300
    )


def test_single_question_streams_the_greedy_answer(tiny_checkpoint: Path, engine: Engine, capsys) -> None:
    cfg = infer_cfg(
        f"model_path={tiny_checkpoint}",
        f"image={IMAGE}",
        "question=What is it?",
        "generation.temperature=0",
        "generation.max_new_tokens=6",
    )
    run(cfg)
    printed = capsys.readouterr().out.strip()
    expected = engine.generate([Request([Turn("human", "What is it?")], IMAGE)], GREEDY)[0]
    assert printed == expected.strip()


@pytest.fixture(scope="module")
def adapter_and_merged(tiny_checkpoint: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A LLaVA-style peft LoRA (with non_lora_trainables.bin) over the tiny model, and its merged export."""
    root = tmp_path_factory.mktemp("peft")
    adapter, _ = make_llava_adapter(tiny_checkpoint, root / "lora", non_lora_file=True)
    assert export.main([str(adapter), str(root / "merged")]) == 0
    return adapter, root / "merged"


def answer_of(model_path: Path, capsys, *overrides: str) -> str:
    capsys.readouterr()
    settings = ["generation.temperature=0", "generation.max_new_tokens=8", "generation.stream=false"]
    run(
        infer_cfg(f"model_path={model_path}", f"image={IMAGE}", "question=What is it?", *settings, *overrides)
    )
    return capsys.readouterr().out


def test_single_with_a_peft_adapter_answers_as_its_merged_export(
    adapter_and_merged: tuple[Path, Path], tiny_checkpoint: Path, capsys
) -> None:
    adapter, merged = adapter_and_merged
    answer = answer_of(adapter, capsys)
    assert answer.strip() and answer == answer_of(merged, capsys)
    assert answer != answer_of(tiny_checkpoint, capsys)  # the adapter and its projector mattered


def test_batch_with_a_peft_adapter_answers_as_its_merged_export(
    adapter_and_merged: tuple[Path, Path], tmp_path: Path
) -> None:
    (tmp_path / "shapes.png").write_bytes(IMAGE.read_bytes())
    questions = ["What is it?", "What colour is the circle?", "Describe it."]
    lines = [json.dumps({"id": i, "image": "shapes.png", "question": q}) for i, q in enumerate(questions)]
    src = tmp_path / "q.jsonl"
    src.write_text("\n".join(lines) + "\n")
    results = {}
    for model in adapter_and_merged:
        out = tmp_path / f"{model.name}.jsonl"
        batch = [f"batch.input={src}", f"batch.output={out}", "generation.max_new_tokens=6"]
        run(infer_cfg(f"model_path={model}", "mode=batch", *batch, "generation.temperature=0"))
        results[model.name] = [json.loads(line)["answer"] for line in out.read_text().splitlines()]
    assert len(results["lora"]) == 3 and results["lora"] == results["merged"]


def test_an_adapter_naming_a_hub_model_needs_base_model(
    adapter_and_merged: tuple[Path, Path], tiny_checkpoint: Path, tmp_path: Path, capsys
) -> None:
    adapter = Path(shutil.copytree(adapter_and_merged[0], tmp_path / "lora"))
    edit_adapter_config(adapter, lambda c: c.update(base_model_name_or_path="01-ai/Yi-VL-6B"))
    result = run_cli(f"model.path={adapter}", "question=hi")
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert result.stderr == (
        f"error: adapter {adapter} names base model '01-ai/Yi-VL-6B', which is not a local folder "
        "(nothing is downloaded); pass model.base=DIR with the downloaded Yi-VL model\n"
    )
    assert answer_of(adapter, capsys, f"base_model={tiny_checkpoint}") == answer_of(
        adapter_and_merged[1], capsys
    )


def test_batch_writes_one_line_per_input_line(tmp_path: Path, engine: Engine) -> None:
    (tmp_path / "shapes.png").write_bytes(IMAGE.read_bytes())
    lines = [
        json.dumps({"id": "a", "image": "shapes.png", "question": "What is it?"}),
        json.dumps({"question": "Text only?"}),
        "{not json",
        json.dumps({"image": "missing.png", "question": "x"}),
        json.dumps({"id": "no-question"}),
    ]
    src = tmp_path / "q.jsonl"
    src.write_text("\n".join(lines) + "\n\n")
    cfg = infer_cfg(f"batch.input={src}", "batch.batch_size=2")
    run_batch(cfg, engine, GREEDY)
    rows = [json.loads(line) for line in (tmp_path / "q.answers.jsonl").read_text().splitlines()]
    assert [r["line"] for r in rows] == [1, 2, 3, 4, 5]
    assert ["answer" in r for r in rows] == [True, True, False, False, False]
    assert "malformed JSON" in rows[2]["error"]
    assert "missing.png" in rows[3]["error"]
    single = engine.generate([Request([Turn("human", "What is it?")], tmp_path / "shapes.png")], GREEDY)
    assert rows[0]["answer"] == single[0]


def test_batched_answers_equal_one_by_one(engine: Engine) -> None:
    requests = [
        Request([Turn("human", "What colour is the circle?")], IMAGE),
        Request([Turn("human", "Hi")]),
        Request([Turn("human", "Describe the picture in detail please.")], IMAGE),
    ]
    batched = engine.generate(requests, GREEDY)
    assert batched == [engine.generate([r], GREEDY)[0] for r in requests]


def test_prompt_longer_than_the_context_is_refused(engine: Engine) -> None:
    long_question = "word " * engine.context_length
    with pytest.raises(YivlError, match="context"):
        engine.generate([Request([Turn("human", long_question)], IMAGE)], GREEDY)


def test_placeholder_rules() -> None:
    turns = [Turn("human", "What is it?")]
    assert with_image_placeholder(turns, True)[0].text == "<image_placeholder>\nWhat is it?"
    assert with_image_placeholder(turns, False) == turns
    with pytest.raises(YivlError, match="no image"):
        with_image_placeholder([Turn("human", "<image_placeholder>\nx")], False)


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["--model-path", "/m"], "model.path=/m"),
        (["--image-file=cat.jpg"], "image=cat.jpg"),
    ],
)
def test_original_flags_get_a_hint(args: list[str], needle: str) -> None:
    result = run_cli(*args)
    assert result.returncode == 2
    assert result.stderr.count("\n") == 1 and needle in result.stderr


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["model_path=/no/such/dir", "question=hi"], "model directory not found"),
        (["question="], "question is empty"),
        ([f"image={ROOT / 'README.md'}", "question=hi"], "README.md"),
        (["mode=nonsense"], "unknown mode"),
        (["generation.temperature=-1", "question=hi"], "temperature"),
    ],
)
def test_user_errors_name_the_problem(tiny_checkpoint: Path, args: list[str], needle: str) -> None:
    model = [] if any(a.startswith("model_path") for a in args) else [f"model_path={tiny_checkpoint}"]
    with pytest.raises(YivlError, match=needle) as caught:
        run(infer_cfg(*model, *args))
    assert "\n" not in str(caught.value)


def test_a_user_error_exits_2_with_one_line_and_no_traceback() -> None:
    result = run_cli("model.path=/no/such/dir", "question=hi")
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr
    assert result.stderr.startswith("error: model directory not found")
    assert result.stderr.strip().count("\n") == 0


def read_answers(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


def test_every_bad_record_gets_an_error_line_with_its_reason(tmp_path: Path, engine: Engine, capsys) -> None:
    folder = tmp_path / "batch"
    folder.mkdir()
    (folder / "shapes.png").write_bytes(IMAGE.read_bytes())
    (tmp_path / "outside.png").write_bytes(IMAGE.read_bytes())
    records = [
        {"id": "ok", "image": "shapes.png", "question": "What is it?"},
        {"id": "int-image", "image": 42, "question": "What is it?"},
        {"id": "text-only", "image": None, "question": "Hi"},
        {"id": "no-question", "image": "shapes.png"},
        "{not json",
        {"id": "missing", "image": "missing.png", "question": "x"},
        {"id": "up", "image": "../outside.png", "question": "x"},
        {"id": "absolute", "image": str(tmp_path / "outside.png"), "question": "x"},
        b'{"question": "caf\xe9"}',
        [1, 2],
        {"question": 42},
        {"question": "x" * 3000},
        {"image": "shapes.png", "question": "<image_placeholder> <image_placeholder>"},
        {"question": "word " * 400},
        {"id": "last", "question": "Bye"},
    ]
    raw = [
        r if isinstance(r, bytes) else (r if isinstance(r, str) else json.dumps(r)).encode() for r in records
    ]
    src = folder / "q.jsonl"
    bom = "\ufeff".encode()  # files saved by Windows editors start with one
    src.write_bytes(bom + b"\n".join(raw[:3]) + b"\n\n" + b"\n".join(raw[3:]) + b"\n")  # a blank line 4
    cfg = infer_cfg(f"batch.input={src}", "batch.batch_size=4", "batch.max_record_bytes=2500")
    engine.context_length = 600  # "word " * 400 fits the line limit but not this context
    run_batch(cfg, engine, GREEDY)
    rows = read_answers(folder / "q.answers.jsonl")
    assert [r["line"] for r in rows] == [1, 2, 3, *range(5, 17)]
    assert [r.get("reason") for r in rows] == [
        None, "image_invalid", None, "question_missing", "malformed_json", "image_unreadable",
        "image_outside_folder", "image_outside_folder", "malformed_json", "record_not_object",
        "question_missing", "record_too_large", "prompt_invalid", "prompt_too_long", None,
    ]  # fmt: skip
    assert [r["id"] for r in rows if "answer" in r] == ["ok", "text-only", "last"]
    assert [r["id"] for r in rows[:6]] == ["ok", "int-image", "text-only", "no-question", 6, "missing"]
    assert rows[1]["error"] == "'image' must be a path string or null (text only), not 42"
    assert rows[6]["error"] == (
        f"image '../outside.png' is outside {folder}; move it there or set "
        "batch.allow_images_outside_folder=true"
    )
    assert rows[11]["error"] == "the line is over batch.max_record_bytes=2500 bytes"
    assert rows[13]["error"].startswith("the prompt is ") and "context is 600" in rows[13]["error"]
    alone = engine.generate([Request([Turn("human", "Hi")])], GREEDY)[0]
    assert rows[2]["answer"] == alone
    assert not (folder / "q.answers.jsonl.partial").exists()
    assert capsys.readouterr().out.splitlines()[-1] == (
        "3 answered, 12 failed (image_invalid 1, image_outside_folder 2, image_unreadable 1, "
        "malformed_json 2, prompt_invalid 1, prompt_too_long 1, question_missing 2, record_not_object 1, "
        f"record_too_large 1), 15 lines -> {folder / 'q.answers.jsonl'}"
    )


def test_image_folder_and_images_outside_it(tmp_path: Path, engine: Engine) -> None:
    (tmp_path / "images").mkdir()
    (tmp_path / "images" / "shapes.png").write_bytes(IMAGE.read_bytes())
    (tmp_path / "outside.png").write_bytes(IMAGE.read_bytes())
    src = tmp_path / "questions" / "q.jsonl"
    src.parent.mkdir()
    src.write_text(
        json.dumps({"image": "shapes.png", "question": "What is it?"})
        + "\n"
        + json.dumps({"image": "../outside.png", "question": "What is it?"})
        + "\n"
    )
    folder = f"batch.image_folder={tmp_path / 'images'}"
    run_batch(infer_cfg(f"batch.input={src}", folder), engine, GREEDY)
    assert [r.get("reason") for r in read_answers(tmp_path / "questions" / "q.answers.jsonl")] == [
        None,
        "image_outside_folder",
    ]
    run_batch(
        infer_cfg(f"batch.input={src}", folder, "batch.allow_images_outside_folder=true"), engine, GREEDY
    )
    rows = read_answers(tmp_path / "questions" / "q.answers.jsonl")
    assert rows[0]["answer"] == rows[1]["answer"]  # the same picture, in and outside the folder


def test_a_run_that_dies_leaves_the_previous_answers_whole(tmp_path: Path, engine: Engine) -> None:
    src = tmp_path / "q.jsonl"
    src.write_text("".join(json.dumps({"id": i, "question": f"Question {i}?"}) + "\n" for i in range(3)))
    answers = tmp_path / "q.answers.jsonl"
    answers.write_text('{"line": 1, "id": 0, "answer": "from an earlier run"}\n')
    calls = []
    original = engine.generate

    def dies_on_the_second_batch(requests, settings, on_text=None):
        calls.append(len(requests))
        if len(calls) == 2:
            raise RuntimeError("CUDA out of memory")
        return original(requests, settings, on_text)

    engine.generate = dies_on_the_second_batch  # type: ignore[method-assign]
    with pytest.raises(RuntimeError, match="out of memory"):
        run_batch(infer_cfg(f"batch.input={src}", "batch.batch_size=1"), engine, GREEDY)
    assert answers.read_text() == '{"line": 1, "id": 0, "answer": "from an earlier run"}\n'
    partial = read_answers(tmp_path / "q.answers.jsonl.partial")
    assert [(r["line"], "answer" in r) for r in partial] == [(1, True)]


@pytest.mark.parametrize(
    ("override", "needle"),
    [
        ("batch.batch_size=0", "batch.batch_size=0 must be an integer >= 1"),
        ("batch.image_folder=/no/such/folder", "batch.image_folder=/no/such/folder is not a folder"),
    ],
)
def test_bad_batch_settings_are_one_line(tmp_path: Path, engine: Engine, override: str, needle: str) -> None:
    src = tmp_path / "q.jsonl"
    src.write_text(json.dumps({"question": "hi"}) + "\n")
    with pytest.raises(YivlError, match=needle):
        run_batch(infer_cfg(f"batch.input={src}", override), engine, GREEDY)
    with pytest.raises(YivlError, match="is the input file"):
        run_batch(infer_cfg(f"batch.input={src}", f"batch.output={src}"), engine, GREEDY)


def test_batch_images_are_read_bounded_and_only_from_regular_files(tmp_path: Path, engine: Engine) -> None:
    """A FIFO is refused before it is opened (no hang) and a file over batch.max_image_bytes unread."""
    import os

    (tmp_path / "shapes.png").write_bytes(IMAGE.read_bytes())
    os.mkfifo(tmp_path / "fifo.png")
    with open(tmp_path / "big.png", "wb") as f:
        f.truncate(1 << 30)  # sparse: refused from its size
    src = tmp_path / "q.jsonl"
    names = ["shapes.png", "fifo.png", "big.png"]
    src.write_text("".join(json.dumps({"image": n, "question": "What is it?"}) + "\n" for n in names))
    run_batch(infer_cfg(f"batch.input={src}", "batch.max_image_bytes=100000000"), engine, GREEDY)
    rows = read_answers(tmp_path / "q.answers.jsonl")
    assert [r.get("reason") for r in rows] == [None, "image_unreadable", "image_unreadable"]
    assert "is a FIFO" in rows[1]["error"]
    assert "over max_image_bytes=100000000" in rows[2]["error"]
