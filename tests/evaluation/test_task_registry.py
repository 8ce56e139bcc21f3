"""The task-type registry: a type defined in one class runs through evaluate.py unchanged, and the
configs and docs list exactly the registered types with the same defaults."""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.evaluation.task_files import (
    eval_config,
    no_network,  # noqa: F401 - fixture
    one_thread,  # noqa: F401 - fixture
    write_images,
    write_jsonl,
)
from yivl.errors import YivlError
from yivl.evaluation import registry
from yivl.evaluation.items import Item, base_item, question_text
from yivl.evaluation.metrics import TaskMetrics
from yivl.evaluation.metrics.summary import mean_metric
from yivl.evaluation.run import run
from yivl.evaluation.sources import RawRecord
from yivl.evaluation.task_types.base import GenerationOptions, TaskType, choice
from yivl.evaluation.tasks import parse_tasks

ROOT = Path(__file__).resolve().parents[2]
TASK_OPTIONS = ROOT / "configs" / "task_options"


@dataclass(frozen=True)
class KeywordOptions(GenerationOptions):
    max_new_tokens: int = 2
    case: str = choice("fold", "fold", "exact")


class KeywordType(TaskType):
    """A task type written the way a new one would be: a hit when the answer contains the record's
    keyword. Nothing else in the project knows about it."""

    name = "keyword"
    Options = KeywordOptions
    display = ("hit_rate",)
    percent = True

    def build_item(self, record: RawRecord, options: Mapping[str, Any]) -> Item:
        item = base_item(record)
        item.question = question_text(record, "keyword")
        item.target = str(record.data["keyword"])
        return item

    def score_output(self, item: Item, output: str, options: Mapping[str, Any], seed: int) -> dict[str, Any]:
        fold = options["case"] == "fold"
        return {"hit": (item.target.lower() in output.lower()) if fold else (item.target in output)}

    def summarize(
        self, records: list[dict[str, Any]], options: Mapping[str, Any], iters: int, seed: int
    ) -> TaskMetrics:
        value, err = mean_metric("hit_rate", [float(r["hit"]) for r in records])
        return TaskMetrics(
            main="hit_rate", values={"hit_rate": value}, stderr={"hit_rate": err}, n=len(records)
        )

    def parsers(self, options: Mapping[str, Any]) -> dict[str, str]:
        return {"keyword_case": options["case"]}


@pytest.fixture
def keyword_type(monkeypatch: pytest.MonkeyPatch) -> KeywordType:
    """``KeywordType`` registered for one test (the registry is restored afterwards)."""
    monkeypatch.setattr(registry, "TYPES", dict(registry.TYPES))
    return registry.register(KeywordType())


@pytest.mark.usefixtures("no_network", "one_thread", "keyword_type")
def test_a_type_defined_in_one_class_runs_end_to_end(tiny_checkpoint: Path, tmp_path: Path) -> None:
    images = write_images(tmp_path, 2)
    records = [
        {"id": "a", "image": images[0], "question": "What colour is the square?", "keyword": "red"},
        {"id": "b", "image": images[1], "question": "Name the colour.", "keyword": "green"},
    ]
    write_jsonl(tmp_path / "keyword.jsonl", records)
    entry = {"type": "keyword", "path": str(tmp_path / "keyword.jsonl"), "max_new_tokens": 3}
    out = tmp_path / "run"
    summary = run(eval_config(tiny_checkpoint, out, [entry]))

    samples = [json.loads(line) for line in (out / "samples_keyword.jsonl").read_text().splitlines()]
    assert [s["id"] for s in sorted(samples, key=lambda s: s["index"])] == ["a", "b"]
    for sample, record in zip(sorted(samples, key=lambda s: s["index"]), records, strict=True):
        assert sample["type"] == "keyword" and sample["target"] == record["keyword"]
        assert sample["prompt"].endswith(
            f"### Human: <image_placeholder>\n{record['question']}\n### Assistant:"
        )
        assert sample["hit"] == (record["keyword"] in sample["raw_output"].lower())
        assert 1 <= sample["gen_tokens"] <= 3  # the entry's budget, not the class default (2) alone
    task = summary["tasks"]["keyword"]
    hits = [s["hit"] for s in samples]
    assert (task["type"], task["main"], task["n"]) == ("keyword", "hit_rate", 2)
    assert task["hit_rate"] == pytest.approx(100.0 * sum(hits) / 2)
    assert summary["parsers"]["keyword"] == {"keyword_case": "fold"}
    options = summary["settings"]["tasks"][0]
    assert (options["max_new_tokens"], options["case"]) == (3, "fold")  # dataclass defaults, entry wins
    assert re.search(r"^\| keyword +\| hit_rate +\| \d+\.\d\d +\|", (out / "summary.md").read_text(), re.M)
    assert "keyword" in registry.generation_type_names()


@pytest.mark.usefixtures("keyword_type")
def test_a_registered_type_validates_its_options() -> None:
    with pytest.raises(YivlError, match=r"^task keyword: case='up'; choose one of fold, exact$"):
        parse_tasks([{"type": "keyword", "path": "k.jsonl", "case": "up"}], {})
    with pytest.raises(YivlError, match=r"^task keyword: unknown option\(s\) norm; keyword takes case, "):
        parse_tasks([{"type": "keyword", "path": "k.jsonl", "norm": "evalai"}], {})
    (spec,) = parse_tasks(["keyword:k.jsonl"], {})
    assert spec.options == {"max_new_tokens": 2, "case": "fold"} and spec.generates


def _listed(text: str) -> list[str]:
    """``loss, vqa, yesno (= pope)`` -> ``[loss, vqa, yesno, pope]``."""
    return re.findall(r"[a-z]+", text)


def test_configs_and_docs_list_exactly_the_registered_types() -> None:
    names = list(registry.type_names())
    eval_yaml = (ROOT / "configs" / "eval.yaml").read_text()
    assert _listed(re.search(r"^# Types: (.*?)\. ", eval_yaml, re.M).group(1)) == names
    val_yaml = (ROOT / "configs" / "val_generation" / "none.yaml").read_text()
    listed = re.search(r"^type: null +# (.*?); null", val_yaml, re.M).group(1)
    assert _listed(listed) == list(registry.generation_type_names())
    docs = (ROOT / "docs" / "evaluation.md").read_text()
    table = docs.split("| type | record fields | metrics (headline first) |")[1].split("\n\n")[0]
    documented = [n for row in table.splitlines()[2:] for n in re.findall(r"`([a-z]+)`", row.split("|")[1])]
    assert sorted(documented) == sorted(names)
    canonical = [kind.name for kind in registry.TYPES.values()]
    assert sorted(p.stem for p in TASK_OPTIONS.glob("*.yaml") if p.stem != "default") == sorted(canonical)
    composed = yaml.safe_load((TASK_OPTIONS / "default.yaml").read_text())["defaults"]
    assert composed == [f"{name}@{name}" for name in canonical]


@pytest.mark.parametrize("name", [kind.name for kind in registry.BUILT_IN])
def test_each_config_file_holds_its_options_defaults(name: str) -> None:
    """configs/task_options/<type>.yaml and the type's options dataclass agree, key order included
    (the order is that of summary.json's settings)."""
    values = yaml.safe_load((TASK_OPTIONS / f"{name}.yaml").read_text())
    assert list(values.items()) == list(registry.get_type(name).defaults().items())
