"""infer.py end to end: its three modes, the engine's checks, and one-line user errors."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from omegaconf import DictConfig

from yivl.data.chat import Turn
from yivl.errors import YivlError
from yivl.models.generation import GenerationSettings
from yivl.serving.engine import Engine, Request, with_image_placeholder
from yivl.serving.infer import generation_settings, run, run_batch, run_chat

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


def test_chat_keeps_history_and_puts_the_image_in_the_first_turn_only(engine: Engine, capsys) -> None:
    cfg = infer_cfg(f"image={IMAGE}", "generation.temperature=0", "generation.max_new_tokens=4")
    seen: list[list[Turn]] = []
    original = engine.generate

    def spy(requests, settings, on_text=None):
        seen.append(list(requests[0].turns))
        return original(requests, settings, on_text)

    engine.generate = spy  # type: ignore[method-assign]
    questions = iter(["first?", "second?", ""])
    run_chat(cfg, engine, generation_settings(cfg.generation), read=lambda _prompt: next(questions))
    assert [len(turns) for turns in seen] == [1, 3]
    assert [t.role for t in seen[1]] == ["human", "assistant", "human"]
    ids = engine.prompt_ids(seen[1], has_image=True)
    assert ids.count(-200) == 1


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
        (["--model-path", "/m"], "model_path=/m"),
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
    result = run_cli("model_path=/no/such/dir", "question=hi")
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr
    assert result.stderr.startswith("error: model directory not found")
    assert result.stderr.strip().count("\n") == 0
