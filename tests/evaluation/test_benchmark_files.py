"""Benchmark files as published (VLMEvalKit TSV, lmms-eval Parquet): the same items, images and metrics
as the project's own JSONL, end to end on the tiny model; and the one-line errors of bad tables."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from tests.evaluation.benchmark_files import mcq_files, open_files, shape_images, yesno_files
from tests.evaluation.task_files import (
    eval_config,
    no_network,  # noqa: F401 - fixture
    one_thread,  # noqa: F401 - fixture
)
from yivl.evaluation.run import load_tasks, run

pytestmark = pytest.mark.usefixtures("no_network", "one_thread")


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, dict[str, Path]]:
    folder = tmp_path_factory.mktemp("benchmarks")
    images = shape_images(folder, 4)
    out = {kind: yesno_files(folder, images, kind) for kind in ("mme", "pope", "hallusionbench")}
    out |= {kind: mcq_files(folder, images, kind) for kind in ("mmbench", "seedbench", "scienceqa", "mmmu")}
    out["open"] = open_files(folder, images)
    return out


def pairs(f: dict[str, dict[str, Path]]) -> list[tuple[Any, Any]]:
    """(table task, JSONL twin task) pairs: every layout, named by type, by benchmark, or found from
    the columns and the file name."""
    o, mmb, seed, sqa = f["open"], f["mmbench"], f["seedbench"], f["scienceqa"]
    mmmu_twin = {"name": "mmmu_j", "type": "mcq", "path": str(f["mmmu"]["jsonl"]), "parser": "mmmu"}
    gqa = {"benchmark": "gqa", "path": str(o["gqa"]), "images": str(o["gqa_images"])}
    return [
        (f"mme:{f['mme']['tsv']}", f"mme_j:mme:{f['mme']['jsonl']}"),
        (f"mme_pq:mme:{f['mme']['parquet']}", f"mme_pq_j:mme:{f['mme']['jsonl']}"),
        (f"pope:{f['pope']['tsv']}", f"pope_j:pope:{f['pope']['jsonl']}"),
        (f"pope_pq:pope:{f['pope']['parquet']}", f"pope_pq_j:pope:{f['pope']['jsonl']}"),
        (f"hallusionbench:{f['hallusionbench']['tsv']}", f"hb_j:yesno:{f['hallusionbench']['jsonl']}"),
        (_mcq(None, mmb["tsv"], benchmark="mmbench"), _mcq("mmb_j", mmb["jsonl"])),
        (_mcq("mmb_pq", mmb["parquet"], benchmark="mmbench"), _mcq("mmb_pq_j", mmb["parquet_jsonl"])),
        (_mcq("seed", seed["tsv"]), _mcq("seed_j", seed["jsonl"])),
        (_mcq("seed_pq", seed["parquet"], benchmark="seedbench"), _mcq("seed_pq_j", seed["parquet_jsonl"])),
        (_mcq("sqa", sqa["tsv"]), _mcq("sqa_j", sqa["jsonl"])),
        (_mcq("sqa_pq", sqa["parquet"]), _mcq("sqa_pq_j", sqa["parquet_jsonl"])),
        (f"mmmu_tsv:mcq:{f['mmmu']['tsv']}", mmmu_twin),
        (f"textvqa:{o['textvqa']}", f"textvqa_j:vqa:{o['textvqa_jsonl']}"),
        (f"vqav2:{o['vqav2']}", f"vqav2_j:vqa:{o['vqav2_jsonl']}"),
        (gqa, f"gqa_j:vqa:{o['gqa_jsonl']}"),
        (f"coco:{o['coco']}", f"coco_j:caption:{o['coco_jsonl']}"),
    ]


def _mcq(name: str | None, path: Path, benchmark: str | None = None) -> dict[str, Any]:
    """An MCQ task mapping scored by generation and likelihood; by type, or by benchmark name."""
    entry = {"path": str(path), "mode": "both"} | ({"name": name} if name else {})
    return entry | ({"benchmark": benchmark} if benchmark else {"type": "mcq"})


def _name(entry: Any) -> str:
    if isinstance(entry, dict):
        return str(entry.get("name") or entry.get("benchmark") or entry["type"])
    return entry.split(":")[0]


def test_tables_give_the_items_and_images_of_their_jsonl_twins(
    files: dict, tiny_checkpoint: Path, tmp_path: Path
) -> None:
    entries = [e for pair in pairs(files) for e in pair]
    loaded = {t.spec.name: t for t in load_tasks(eval_config(tiny_checkpoint, tmp_path, entries))}
    for table, twin in pairs(files):
        a, b = loaded[_name(table)], loaded[_name(twin)]
        options = {k: v for k, v in a.spec.options.items() if k != "images"}
        assert a.spec.type == b.spec.type and options == b.spec.options, _name(table)
        assert len(a.items) == len(b.items) == 6, _name(table)
        for x, y in zip(a.items, b.items, strict=True):
            assert (x.question, x.target, x.cloze, x.continuations) == (
                y.question,
                y.target,
                y.cloze,
                y.continuations,
            )
            assert {k: v for k, v in x.meta.items() if k != "pair_id"} == {
                k: v for k, v in y.meta.items() if k != "pair_id"
            }, _name(table)
            assert x.image.read() == y.image.read(), _name(table)  # the same JPEG/PNG bytes
    benchmarks = {name: t.benchmark for name, t in loaded.items() if not name.endswith("_j")}
    assert benchmarks == {
        "mme": "mme", "mme_pq": "mme", "pope": "pope", "pope_pq": "pope", "hallusionbench": "hallusionbench",
        "mmbench": "mmbench", "mmb_pq": "mmbench", "seed": "seedbench", "seed_pq": "seedbench",
        "sqa": "scienceqa", "sqa_pq": "scienceqa", "mmmu_tsv": "mmmu", "textvqa": "textvqa",
        "vqav2": "vqav2", "gqa": "gqa", "coco": "coco",
    }  # fmt: skip
    assert loaded["mmmu_tsv"].spec.options["parser"] == "mmmu"  # implied by the layout found
    mme = loaded["mme"].items  # the second question of a pair references the first row's image
    assert [i.image.display() for i in mme] == ["MME.tsv:100"] * 2 + ["MME.tsv:102"] * 2 + ["MME.tsv:104"] * 2
    assert loaded["mmmu_tsv"].items[5].meta["open"] is True


def test_tables_score_exactly_as_their_jsonl_twins(
    files: dict, tiny_checkpoint: Path, tmp_path: Path
) -> None:
    entries = [e for pair in pairs(files) for e in pair]
    summary = run(eval_config(tiny_checkpoint, tmp_path / "run", entries, "batch_size=4"))
    tasks = summary["tasks"]
    for table, twin in pairs(files):
        a, b = tasks[_name(table)], tasks[_name(twin)]
        assert {k: v for k, v in a.items() if k != "name"} == {k: v for k, v in b.items() if k != "name"}, (
            _name(table)
        )
        outputs = [_outputs(tmp_path / "run", _name(e)) for e in (table, twin)]
        assert outputs[0] == outputs[1] and len(outputs[0]) == 6
    assert tasks["mmbench"]["acc_sum"] == tasks["mmb_j"]["acc_sum"]
    assert {"perception", "total"} <= set(tasks["mme"]) and "f1/adversarial" in tasks["pope_pq"]
    assert {"cider", "bleu_4"} <= set(tasks["coco"]) and "accuracy/answer_type/color" in tasks["vqav2"]
    settings = json.loads((tmp_path / "run" / "run.json").read_text())["settings"]
    assert {t["name"]: t["benchmark"] for t in settings["tasks"]}["seed"] == "seedbench"


def _outputs(out: Path, name: str) -> list[tuple]:
    lines = (out / f"samples_{name}.jsonl").read_text().splitlines()
    records = sorted((json.loads(line) for line in lines), key=lambda r: r["index"])
    return [(r["prompt"], r.get("raw_output"), r["target"], r.get("ll_sum")) for r in records]
