"""evaluate.py takes a plain peft adapter as checkpoint=: the same greedy answers as its merged export."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.checkpoint.peft_adapters import edit_adapter_config, make_llava_adapter
from tests.evaluation.task_files import (
    eval_config,
    no_network,  # noqa: F401 - fixture
    one_thread,  # noqa: F401 - fixture
    task_records,
    write_images,
    write_jsonl,
)
from yivl.checkpoint import export
from yivl.errors import YivlError
from yivl.evaluation.run import run

pytestmark = pytest.mark.usefixtures("no_network", "one_thread")


def answers(out_dir: Path) -> list[str]:
    rows = [json.loads(line) for line in (out_dir / "samples_vqa.jsonl").read_text().splitlines()]
    return [row["raw_output"] for row in sorted(rows, key=lambda row: row["index"])]


def test_evaluate_scores_a_peft_adapter_as_its_merged_export(tiny_checkpoint: Path, tmp_path: Path) -> None:
    adapter, _ = make_llava_adapter(tiny_checkpoint, tmp_path / "lora", non_lora_file=False)
    assert export.main([str(adapter), str(tmp_path / "merged")]) == 0
    data = write_jsonl(tmp_path / "vqa.jsonl", task_records("vqa", write_images(tmp_path, 4), n=4))
    summary = run(eval_config(adapter, tmp_path / "eval-adapter", [f"vqa:{data}"]))
    run(eval_config(tmp_path / "merged", tmp_path / "eval-merged", [f"vqa:{data}"]))
    run(eval_config(tiny_checkpoint, tmp_path / "eval-base", [f"vqa:{data}"]))
    assert summary["checkpoint"]["kind"] == "peft"
    assert summary["checkpoint"]["base_model"] == str(tiny_checkpoint.resolve())
    assert len(answers(tmp_path / "eval-adapter")) == 4
    assert answers(tmp_path / "eval-adapter") == answers(tmp_path / "eval-merged")
    assert answers(tmp_path / "eval-adapter") != answers(tmp_path / "eval-base")  # the adapter mattered


def test_evaluate_asks_for_base_model_when_the_adapter_names_a_hub_id(
    tiny_checkpoint: Path, tmp_path: Path
) -> None:
    adapter, _ = make_llava_adapter(tiny_checkpoint, tmp_path / "lora", non_lora_file=True)
    edit_adapter_config(adapter, lambda c: c.update(base_model_name_or_path="01-ai/Yi-VL-6B"))
    data = write_jsonl(tmp_path / "vqa.jsonl", task_records("vqa", write_images(tmp_path, 1), n=1))
    with pytest.raises(YivlError, match=r"pass model.base=DIR with the downloaded Yi-VL model$"):
        run(eval_config(adapter, tmp_path / "eval", [f"vqa:{data}"]))
    summary = run(eval_config(adapter, tmp_path / "eval", [f"vqa:{data}"], f"base_model={tiny_checkpoint}"))
    assert summary["checkpoint"]["kind"] == "peft"
