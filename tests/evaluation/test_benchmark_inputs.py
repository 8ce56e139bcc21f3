"""Bad benchmark tables get one line naming the problem and the fix; VLMEvalKit's image references are
followed under ``limit``; a LLaVA JSON scores with its images folder (``image_folder``), contained."""

from __future__ import annotations

import base64
import json
import sys
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from tests.evaluation.benchmark_files import (
    b64,
    mcq_files,
    shape_images,
    write_parquet,
    write_tsv,
    yesno_files,
)
from tests.evaluation.task_files import (
    eval_config,
    no_network,  # noqa: F401 - fixture
    one_thread,  # noqa: F401 - fixture
)
from yivl.errors import YivlError
from yivl.evaluation.run import load_tasks, run

pytestmark = pytest.mark.usefixtures("no_network", "one_thread")


def _load(tmp_path: Path, tasks: list, *overrides: str) -> list:
    return load_tasks(eval_config(tmp_path / "unused-model", tmp_path / "out", tasks, *overrides))


def _error(tmp_path: Path, tasks: list, *overrides: str) -> str:
    with pytest.raises(YivlError) as err:
        _load(tmp_path, tasks, *overrides)
    message = str(err.value)
    assert "\n" not in message
    return message.replace(str(tmp_path), "D")


def _mme_row(index: int, image: str) -> dict:
    return {
        "index": index,
        "image": image,
        "question": "Is there a square?",
        "answer": "Yes",
        "category": "count",
    }


def test_bad_tables_are_one_line_errors(tmp_path: Path) -> None:
    images = shape_images(tmp_path, 4)
    mme = yesno_files(tmp_path, images, "mme")
    write_tsv(tmp_path / "cols.tsv", [{"index": 1, "question": "q", "image": b64(tmp_path, images[0])}])
    bad = "@@ not base64, and longer than the sixty-four characters of a row reference ...."
    write_tsv(tmp_path / "bad.tsv", [_mme_row(1, bad)])
    write_tsv(tmp_path / "ref.tsv", [_mme_row(1, "7")])
    (tmp_path / "empty.tsv").write_text("")
    (tmp_path / "empty.parquet").write_bytes(b"")
    row = {"question_id": "a", "image": {"bytes": b"x", "path": "a"}, "question": "q", "answer": "yes"}
    pq.write_table(
        pa.Table.from_pylist([row | {"category": "random"}]).slice(0, 0), tmp_path / "zero.parquet"
    )
    (tmp_path / "data.tsv").write_bytes(mcq_files(tmp_path, images, "mmbench")["tsv"].read_bytes())
    write_parquet(tmp_path / "gqa.parquet", [{"id": "1", "imageId": "n1", "question": "q", "answer": "a"}])
    assert _error(tmp_path, [f"mme:{tmp_path / 'cols.tsv'}"]) == (
        "D/cols.tsv: unknown TSV layout for task type mme; columns found: index, question, image; "
        "expected (VLMEvalKit TSV) mme: index, image, question, answer, category"
    )
    assert _error(tmp_path, [f"mme:{tmp_path / 'bad.tsv'}"]) == (
        "D/bad.tsv:row 1: the 'image' cell is not valid base64 (Only base64 data is allowed); "
        "re-export the row's image"
    )
    assert _error(tmp_path, [f"mme:{mme['tsv']}"], "max_image_bytes=100") == (
        "D/MME.tsv:row 1: the 'image' cell holds about 135 bytes, over max_image_bytes=100; "
        "raise max_image_bytes or drop the row"
    )
    assert _error(tmp_path, [f"mme:{mme['parquet']}"], "max_image_bytes=100") == (
        "D/MME.parquet:row 1: the 'image' cell holds 135 bytes, over max_image_bytes=100; "
        "raise max_image_bytes or drop the row"
    )
    assert _error(tmp_path, [f"mme:{tmp_path / 'ref.tsv'}"]) == (
        "D/ref.tsv:row 1: the 'image' cell names row index 7, which holds no image in ref.tsv; "
        "give the TSV as published"
    )
    assert _error(tmp_path, [f"mme:{tmp_path / 'empty.tsv'}"]) == (
        "D/empty.tsv is empty; give the benchmark's .tsv file as published"
    )
    assert _error(tmp_path, [f"pope:{tmp_path / 'empty.parquet'}"]) == (
        "D/empty.parquet is empty; give the benchmark's .parquet file as published"
    )
    assert _error(tmp_path, [f"pope:{tmp_path / 'zero.parquet'}"]) == (
        "D/zero.parquet holds no records; give the benchmark's table with its rows"
    )
    assert _error(tmp_path, [f"mcq:{tmp_path / 'data.tsv'}"]) == (
        "D/data.tsv: the columns fit the layouts of mmbench, mmmu, scienceqa, seedbench; name the "
        "benchmark, e.g. mmbench:PATH or {benchmark: mmbench, path: PATH}"
    )
    assert _error(tmp_path, [f"gqa:{tmp_path / 'gqa.parquet'}"]) == (
        "D/gqa.parquet: gqa questions hold no images; add images=PATH (its images Parquet) in the task "
        "mapping"
    )
    assert _error(tmp_path, [{"benchmark": "mmbench", "type": "vqa", "path": "x.tsv"}]) == (
        "task {'benchmark': 'mmbench', 'type': 'vqa', 'path': 'x.tsv'}: benchmark mmbench is scored as mcq, "
        "not vqa"
    )
    assert _error(tmp_path, [{"type": "mme", "path": str(mme["tsv"]), "image_folder": str(tmp_path)}]) == (
        "task mme: image_folder is for JSON/JSONL tasks; MME.tsv holds its images"
    )


def test_without_pyarrow_parquet_is_one_line(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    mme = yesno_files(tmp_path, shape_images(tmp_path, 3), "mme")
    monkeypatch.setitem(sys.modules, "pyarrow.parquet", None)  # import fails as when pyarrow is absent
    assert _error(tmp_path, [f"mme:{mme['parquet']}"]) == (
        "reading D/MME.parquet needs pyarrow; pip install pyarrow"
    )


def test_references_are_followed_past_the_limit(tmp_path: Path) -> None:
    """Row 1 names row 3's image (forward): with limit=1 the reader goes on to row 3 and stops there."""
    images = shape_images(tmp_path, 3)
    rows = [
        _mme_row(10, "12"),
        _mme_row(11, b64(tmp_path, images[1])),
        _mme_row(12, b64(tmp_path, images[2])),
    ]
    rows.append(_mme_row(13, "not base64 but never read: the reader stopped at row 3" * 2))
    write_tsv(tmp_path / "MME.tsv", rows)
    [task] = _load(tmp_path, [f"mme:{tmp_path / 'MME.tsv'}"], "limit=1")
    assert [i.id for i in task.items] == ["10"]
    assert task.items[0].image.read() == (tmp_path / images[2]).read_bytes()
    assert task.items[0].image.display() == "MME.tsv:12" and task.items[0].meta["pair_id"] == "MME.tsv:12"


def test_a_corrupt_image_in_a_table_stops_the_run_in_one_line(tiny_checkpoint: Path, tmp_path: Path) -> None:
    """Valid base64 of bytes that are no image: the evaluator's corrupt-image error, as for files."""
    junk = base64.b64encode(b"not a png, " * 20).decode()
    write_tsv(tmp_path / "POPE.tsv", [_mme_row(1, junk) | {"category": "random"}])
    cfg = eval_config(tiny_checkpoint, tmp_path / "out", [f"pope:{tmp_path / 'POPE.tsv'}"])
    with pytest.raises(YivlError, match=r"^image POPE\.tsv:1: .*; fix or remove the image$"):
        run(cfg)


def _llava_json(path: Path, image_names: list[str]) -> Path:
    """Records shaped like llava_v1_5_mix665k.json (a JSON array, ``<image>``, coco/ paths)."""
    records = [
        {
            "id": f"{i:012d}",
            "image": name,
            "conversations": [
                {"from": "human", "value": "<image>\nWhat colour is the square?"},
                {"from": "gpt", "value": ("red", "green", "blue", "yellow")[i % 4]},
            ],
        }
        for i, name in enumerate(image_names)
    ]
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(records, indent=2), encoding="utf-8")
    return path


def test_llava_json_scores_with_its_image_folder(tiny_checkpoint: Path, tmp_path: Path) -> None:
    folder = tmp_path / "data"
    names = shape_images(folder, 4)
    beside = _llava_json(folder / "mix.json", names)  # images relative to the file's folder
    apart = _llava_json(tmp_path / "annotations" / "mix.json", names)
    tasks = [
        {"name": "beside", "type": "loss", "path": str(beside)},
        {"name": "apart", "type": "loss", "path": str(apart), "image_folder": str(folder)},
    ]
    summary = run(eval_config(tiny_checkpoint, tmp_path / "out", tasks))["tasks"]
    assert summary["apart"]["n"] == 4 and summary["apart"]["nll"] == summary["beside"]["nll"]
    outside = _llava_json(tmp_path / "annotations" / "escape.json", ["../annotations/mix.json"])
    entry = {"type": "loss", "path": str(outside), "image_folder": str(folder)}
    assert _error(tmp_path, [entry]) == (
        "image_outside_folder: D/annotations/escape.json[0]: image '../annotations/mix.json' resolves to "
        "D/annotations/mix.json, outside the image folder D/data; fix the path or set "
        "allow_images_outside_folder (--allow-images-outside-folder)"
    )
    [task] = _load(tmp_path, [entry], "allow_images_outside_folder=true")
    assert task.items[0].image.path == str(tmp_path / "annotations" / "mix.json")


def test_a_folder_of_parquet_shards_reads_as_one_table(tmp_path: Path) -> None:
    """HF datasets publish splits as ``val-0000N-of-0000M.parquet`` shards: read in name order."""
    from tests.evaluation.benchmark_files import open_files

    files = open_files(tmp_path, shape_images(tmp_path, 4))
    table = pq.read_table(files["textvqa"])
    shards = tmp_path / "textvqa" / "data"
    shards.mkdir(parents=True)
    pq.write_table(table.slice(4), shards / "validation-00001-of-00002.parquet")
    pq.write_table(table.slice(0, 4), shards / "validation-00000-of-00002.parquet")
    one, split = _load(tmp_path, [f"one:textvqa:{files['textvqa']}", f"split:textvqa:{shards}"])
    assert split.benchmark == "textvqa" and [i.id for i in split.items] == [str(i) for i in range(6)]
    assert [(i.question, i.target, i.image.read()) for i in split.items] == [
        (i.question, i.target, i.image.read()) for i in one.items
    ]


def test_lmms_mmmu_parquet_reads_its_option_literals_and_open_questions(tmp_path: Path) -> None:
    """lmms-lab/MMMU: ``options`` a Python list literal, ``question_type``, ``image_1``..``image_7``."""
    from tests.evaluation.benchmark_files import hf_image, write_jsonl

    images = shape_images(tmp_path, 2)
    base = {"explanation": "", "img_type": "['Diagrams']", "topic_difficulty": "Easy", "subfield": "Colour"}
    rows = [
        {"id": "validation_Art_1", "question": "<image 1> What colour is the square?"}
        | {"options": "['red', 'green', \"it's blue\"]", "answer": "A", "question_type": "multiple-choice"},
        {"id": "validation_Art_2", "question": "<image 1> Name the colour."}
        | {"options": "[]", "answer": "green", "question_type": "open"},
    ]
    for row, image in zip(rows, images, strict=True):
        row |= base | {"image_1": hf_image(tmp_path, image), "image_2": None}
    write_parquet(tmp_path / "MMMU_validation.parquet", rows)
    twin = [
        {"id": "validation_Art_1", "image": images[0], "question": rows[0]["question"]}
        | {"choices": ["red", "green", "it's blue"], "answer": "A", "category": "Colour"},
        {"id": "validation_Art_2", "image": images[1], "question": rows[1]["question"]}
        | {"answer": "green", "question_type": "open"},
    ]
    write_jsonl(tmp_path / "mmmu.jsonl", twin)
    entries = [f"mmmu:{tmp_path / 'MMMU_validation.parquet'}", f"j:mcq:{tmp_path / 'mmmu.jsonl'}"]
    table, jsonl = _load(tmp_path, entries, "task_options.mcq.parser=mmmu")
    assert table.benchmark == "mmmu" and table.spec.options["parser"] == "mmmu"
    assert [(i.question, i.target, i.meta, i.image.read()) for i in table.items] == [
        (i.question, i.target, i.meta, i.image.read()) for i in jsonl.items
    ]
    assert table.items[1].meta["open"] is True
