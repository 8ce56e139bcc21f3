"""Samples that do not fit the model's context are skipped and counted, never fatal, in every task type."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from tests.evaluation.task_files import (
    eval_config,
    no_network,  # noqa: F401 - fixture
    one_thread,  # noqa: F401 - fixture
    task_records,
    too_long_record,
    without_run_details,
    write_images,
    write_jsonl,
)
from yivl.evaluation.run import run
from yivl.evaluation.runner import TaskRunner

pytestmark = pytest.mark.usefixtures("no_network", "one_thread")

KINDS = ("vqa", "mcq", "loss")
OPTIONS = {"mcq": {"mode": "both"}}  # generation and likelihood scoring of the same items
LONG_ID = "too-long"
RUN_DETAILS = ("task", "batch_s")  # what differs between the same sample's records in two tasks


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Per type, ``<type>_with.jsonl`` (6 records, an over-long one third) and ``<type>_without.jsonl``."""
    folder = tmp_path_factory.mktemp("skip_data")
    images = write_images(folder, 6)
    for kind in KINDS:
        normal = task_records(kind, images)
        write_jsonl(folder / f"{kind}_without.jsonl", normal)
        write_jsonl(
            folder / f"{kind}_with.jsonl", [*normal[:2], too_long_record(kind, images, LONG_ID), *normal[2:]]
        )
    write_jsonl(folder / "all_long.jsonl", [too_long_record("vqa", images, f"long-{i}") for i in range(2)])
    return folder


def task(data: Path, kind: str, variant: str) -> dict:
    path = data / f"{kind}_{variant}.jsonl"
    return {"name": f"{kind}_{variant}", "type": kind, "path": str(path), **OPTIONS.get(kind, {})}


def samples(out: Path, name: str) -> dict[str, dict]:
    lines = (out / f"samples_{name}.jsonl").read_text().splitlines()
    return {r["id"]: r for r in map(json.loads, lines)}


def test_an_over_long_sample_is_skipped_counted_and_left_out_of_the_metrics(
    tiny_checkpoint: Path, data_dir: Path, tmp_path: Path
) -> None:
    tasks = [task(data_dir, kind, v) for kind in KINDS for v in ("with", "without")]
    tasks.append({"name": "all_long", "type": "vqa", "path": str(data_dir / "all_long.jsonl")})
    out = tmp_path / "run"
    summary = run(eval_config(tiny_checkpoint, out, tasks, "batch_size=4", "chart=true", "batch_check=4"))
    markdown = (out / "summary.md").read_text()
    assert re.search(r"\| N +\| Skipped +\| Unparsed +\|", markdown)
    assert re.search(r"\| vqa_with +\| accuracy +\| [\d.]+ +\| [\d.]+ +\| 6 +\| 1 +\|", markdown)
    # the skip count is the task's: answer-type rows do not repeat it
    assert re.search(
        r"\| vqa_with +\| accuracy/answer_type/\w+ +\| [\d.]+ +\| [\d.]+ +\| \d +\| - +\|", markdown
    )
    for kind in KINDS:
        with_long, without = summary["tasks"][f"{kind}_with"], summary["tasks"][f"{kind}_without"]
        assert (with_long["n"], with_long["n_skipped"], with_long["skipped"]) == (6, 1, {"too_long": 1})
        assert (without["n_skipped"], without["skipped"]) == (0, {})
        strip = ("n_skipped", "skipped")
        assert {k: v for k, v in with_long.items() if k not in strip} == {
            k: v for k, v in without.items() if k not in strip
        }
        records = samples(out, f"{kind}_with")
        skipped = records.pop(LONG_ID)
        assert skipped["skipped"] == "too_long" and skipped["index"] == 2
        assert skipped["length"] > skipped["context"] == 4096
        assert f"{skipped['length']} tokens" in skipped["skip_detail"] and "4096" in skipped["skip_detail"]
        assert not {"raw_output", "logprob", "ll_sum"} & set(skipped)  # never computed
        reference = samples(out, f"{kind}_without")
        for sample_id, record in records.items():  # same batches, so the same answers and scores
            want = {k: v for k, v in reference[sample_id].items() if k not in (*RUN_DETAILS, "index")}
            assert {k: v for k, v in record.items() if k not in (*RUN_DETAILS, "index")} == want
        assert f"Task `{kind}_with`: 1 of 7 samples skipped (too_long=1" in markdown
    assert summary["tasks"]["loss_with"]["nll"] > 0  # a real number, equal to the file without the sample
    assert len(summary["batch_check"]["vqa_with"]["differ"]) == len(
        summary["batch_check"]["vqa_without"]["differ"]
    )
    everything = summary["tasks"]["all_long"]
    assert (everything["main"], everything["n"], everything["n_skipped"]) == (None, 0, 2)
    assert "every sample was skipped (too_long=2)" in everything["note"]
    assert "all_long" not in summary["batch_check"]
    assert "| all_long" in markdown and "(every sample skipped)" in markdown
    assert "Task `all_long`: all 2 samples were skipped" in markdown
    assert (out / "summary.png").stat().st_size > 1000


def test_resume_keeps_skipped_samples_and_never_computes_them(
    tiny_checkpoint: Path, data_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    tasks = [task(data_dir, "vqa", "with"), task(data_dir, "loss", "with")]
    full = run(eval_config(tiny_checkpoint, tmp_path / "full", tasks, "batch_size=4"))
    killed = tmp_path / "killed"
    run(eval_config(tiny_checkpoint, killed, tasks, "batch_size=4"))
    vqa = killed / "samples_vqa_with.jsonl"
    lines = vqa.read_text().splitlines(keepends=True)
    assert json.loads(lines[0])["id"] == LONG_ID  # skipped samples are recorded before any batch runs
    vqa.write_text("".join(lines[:2]))  # the skipped record and one scored record survived the kill
    (killed / "samples_loss_with.jsonl").unlink()  # a task that never started
    computed: list[str] = []
    real_compute = TaskRunner.compute

    def spy(self: TaskRunner, spec, items, prepared, pixels):  # the real compute, noting the items
        computed.extend(item.id for item in items)
        return real_compute(self, spec, items, prepared, pixels)

    monkeypatch.setattr(TaskRunner, "compute", spy)
    resumed = run(eval_config(tiny_checkpoint, killed, tasks, "batch_size=4", "resume=true"))
    assert without_run_details(resumed) == without_run_details(full)
    assert LONG_ID not in computed
    assert resumed["timing"]["tasks"]["vqa_with"]["samples"] == 5
    assert (
        resumed["timing"]["tasks"]["loss_with"]["samples"] == 6
    )  # the skipped one is recorded, not computed
    ids = [json.loads(line)["id"] for line in vqa.read_text().splitlines()]
    assert sorted(ids) == sorted(samples(tmp_path / "full", "vqa_with")) and ids.count(LONG_ID) == 1
    assert samples(killed, "loss_with")[LONG_ID]["skipped"] == "too_long"
