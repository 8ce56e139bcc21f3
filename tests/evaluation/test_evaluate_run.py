"""evaluate.py end to end on the tiny model: every task type, outputs, resume, batch-size check."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.evaluation.task_files import (
    eval_config,
    no_network,  # noqa: F401 - fixture
    one_thread,  # noqa: F401 - fixture
    task_records,
    without_run_details,
    write_images,
    write_jsonl,
)
from yivl.errors import YivlError
from yivl.evaluation.run import run

pytestmark = pytest.mark.usefixtures("no_network", "one_thread")


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("eval_data")
    images = write_images(folder, 6)
    for kind in ("vqa", "mcq", "yesno", "mme", "caption", "loss"):
        write_jsonl(folder / f"{kind}.jsonl", task_records(kind, images))
    return folder


def all_tasks(data: Path) -> list:
    return [
        f"vqa:{data / 'vqa.jsonl'}",
        {"name": "mcq", "type": "mcq", "path": str(data / "mcq.jsonl"), "mode": "both", "circular": True},
        {"name": "mmmu", "type": "mcq", "path": str(data / "mcq.jsonl"), "parser": "mmmu"},
        f"pope:{data / 'yesno.jsonl'}",
        f"mme:{data / 'mme.jsonl'}",
        f"caption:{data / 'caption.jsonl'}",
        f"loss:{data / 'loss.jsonl'}",
    ]


def test_every_task_type_end_to_end(tiny_checkpoint: Path, data_dir: Path, tmp_path: Path) -> None:
    out = tmp_path / "run"
    overrides = ("batch_size=4", "chart=true")
    summary = run(eval_config(tiny_checkpoint, out, all_tasks(data_dir), *overrides))
    tasks = summary["tasks"]
    assert set(tasks) == {"vqa", "mcq", "mmmu", "pope", "mme", "caption", "loss"}
    assert tasks["pope"]["type"] == "yesno"
    assert tasks["vqa"]["main"] == "accuracy" and tasks["vqa"]["n"] == 6
    assert "accuracy/answer_type/color" in tasks["vqa"]
    assert {"accuracy", "circular_accuracy", "acc_sum", "acc_mean"} <= set(tasks["mcq"])
    assert tasks["mcq"]["n/circular_groups"] == 3
    assert "accuracy_without_guesses" in tasks["mmmu"] and "n_guessed" in tasks["mmmu"]
    assert {"f1", "precision", "recall", "yes_ratio", "f1/random", "f1_avg"} <= set(tasks["pope"])
    assert {"perception", "cognition", "total", "acc/existence"} <= set(tasks["mme"])
    assert {"bleu_4", "cider", "rouge_l"} <= set(tasks["caption"])
    assert tasks["loss"]["ppl"] == pytest.approx(2.718281828 ** tasks["loss"]["nll"])
    for name in tasks:
        lines = (out / f"samples_{name}.jsonl").read_text().splitlines()
        records = [json.loads(line) for line in lines]
        assert len(records) == 6 and all(r["prompt"].startswith("This is a chat") for r in records)
    vqa = [json.loads(line) for line in (out / "samples_vqa.jsonl").read_text().splitlines()]
    assert vqa[0]["prompt"].endswith(
        "### Human: <image_placeholder>\nWhat colour is the square?\n"
        "Answer the question using a single word or phrase.\n### Assistant:"
    )
    assert {"raw_output", "parsed", "accuracy", "gen_tokens", "target"} <= set(vqa[0])
    assert (out / "summary.png").stat().st_size > 1000
    assert "| Task" in (out / "summary.md").read_text()
    written = json.loads((out / "summary.json").read_text())
    assert written["checkpoint"]["kind"] == "published" and len(written["checkpoint"]["fingerprint"]) == 64
    assert set(written["dataset_fingerprint"]) == set(tasks)
    assert {"torch", "transformers", "python"} <= set(written["versions"])
    assert written["settings"]["batch_size"] == 4 and written["timing"]["wall_s"] > 0


def test_resume_after_kill_gives_the_same_summary(
    tiny_checkpoint: Path, data_dir: Path, tmp_path: Path
) -> None:
    tasks = [
        f"vqa:{data_dir / 'vqa.jsonl'}",
        f"pope:{data_dir / 'yesno.jsonl'}",
        f"loss:{data_dir / 'loss.jsonl'}",
    ]
    full = run(eval_config(tiny_checkpoint, tmp_path / "full", tasks, "batch_size=4"))
    killed = tmp_path / "killed"
    run(eval_config(tiny_checkpoint, killed, tasks, "batch_size=4"))
    vqa = killed / "samples_vqa.jsonl"
    lines = vqa.read_text().splitlines(keepends=True)
    vqa.write_text(lines[0] + lines[1][:15])  # one whole record and a torn one, as after a kill mid-write
    (killed / "samples_pope.jsonl").unlink()  # a task that never started
    (killed / "summary.json").unlink()
    with pytest.raises(YivlError, match="resume=true"):
        run(eval_config(tiny_checkpoint, killed, tasks, "batch_size=4"))
    resumed = run(eval_config(tiny_checkpoint, killed, tasks, "batch_size=4", "resume=true"))
    assert without_run_details(resumed) == without_run_details(full)
    assert resumed["timing"]["tasks"]["vqa"]["samples"] == 5
    assert resumed["timing"]["tasks"]["loss"]["samples"] == 0
    assert len(vqa.read_text().splitlines()) == 6


def test_resume_refuses_other_settings(tiny_checkpoint: Path, data_dir: Path, tmp_path: Path) -> None:
    tasks = [f"vqa:{data_dir / 'vqa.jsonl'}"]
    run(eval_config(tiny_checkpoint, tmp_path / "r", tasks, "limit=2"))
    with pytest.raises(YivlError, match=r"settings\.limit differs"):
        run(eval_config(tiny_checkpoint, tmp_path / "r", tasks, "limit=3", "resume=true"))


def test_batched_answers_match_batch_size_one_except_where_reported(
    tiny_checkpoint: Path, data_dir: Path, tmp_path: Path
) -> None:
    tasks = [f"vqa:{data_dir / 'vqa.jsonl'}"]
    batched = run(eval_config(tiny_checkpoint, tmp_path / "b8", tasks, "batch_size=8", "batch_check=6"))
    run(eval_config(tiny_checkpoint, tmp_path / "b1", tasks, "batch_size=1"))

    def answers(folder: Path) -> dict[str, str]:
        lines = (folder / "samples_vqa.jsonl").read_text().splitlines()
        return {r["id"]: r["raw_output"] for r in map(json.loads, lines)}

    one, eight = answers(tmp_path / "b1"), answers(tmp_path / "b8")
    check = batched["batch_check"]["vqa"]
    assert check["checked"] == 6
    assert {d["id"] for d in check["differ"]} == {k for k in one if one[k] != eight[k]}
