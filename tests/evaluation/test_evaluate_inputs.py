"""evaluate.py input handling: task entries, record checks, WebDataset shards, one-line errors."""

from __future__ import annotations

import io
import json
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest

from tests.evaluation.task_files import (
    ROOT,
    eval_config,
    no_network,  # noqa: F401 - fixture
    one_thread,  # noqa: F401 - fixture
    task_records,
    write_images,
    write_jsonl,
)
from yivl.errors import YivlError
from yivl.evaluation.registry import build_items, type_names
from yivl.evaluation.run import load_tasks, run
from yivl.evaluation.sources import read_task_file
from yivl.evaluation.tasks import parse_tasks

pytestmark = pytest.mark.usefixtures("no_network", "one_thread")


def test_task_entries_accept_strings_and_mappings() -> None:
    specs = parse_tasks(
        ["vqa:a.jsonl", "adv:pope:b/c:d.jsonl", {"type": "mcq", "path": "m.jsonl", "mode": "both"}],
        {"vqa": {"norm": "evalai"}, "yesno": {}, "mcq": {"mode": "generate", "parser": "default"}},
    )
    assert [(s.name, s.type, str(s.path)) for s in specs] == [
        ("vqa", "vqa", "a.jsonl"),
        ("adv", "yesno", "b/c:d.jsonl"),
        ("mcq", "mcq", "m.jsonl"),
    ]
    assert specs[2].options == {"mode": "both", "parser": "default"}


@pytest.mark.parametrize(
    ("entries", "message"),
    [
        (["qa:x.jsonl"], "unknown task type 'qa'; valid task types: " + ", ".join(type_names())),
        (["vqa:a.jsonl", "vqa:b.jsonl"], "two tasks are named 'vqa'"),
        ([{"type": "vqa", "path": "a", "nrom": "x"}], "unknown option(s) nrom"),
        ([{"type": "mcq", "path": "a", "mode": "guess"}], "mode='guess'; choose one of generate"),
        ([], "no tasks given"),
    ],
)
def test_bad_task_entries(entries: list, message: str) -> None:
    options = {"vqa": {"norm": "evalai"}, "mcq": {"mode": "generate"}}
    with pytest.raises(YivlError, match=message.replace("(", r"\(").replace(")", r"\)")):
        parse_tasks(entries, options)


@pytest.mark.parametrize(
    ("kind", "edit", "message"),
    [
        ("vqa", lambda r: r.update(answers=["a"] * 9), "exactly 10 answers, got 9"),
        ("vqa", lambda r: r.pop("question"), "needs a non-empty string 'question'"),
        ("mcq", lambda r: r.update(answer="E"), "not one of the letters ABCD"),
        ("mcq", lambda r: r.pop("choices"), "needs a 'choices' list"),
        ("yesno", lambda r: r.update(answer="maybe"), "must be 'yes' or 'no'"),
        ("mme", lambda r: r.pop("category"), "needs a 'category'"),
        ("caption", lambda r: r.update(captions=[]), "non-empty 'captions' list"),
        ("loss", lambda r: r.pop("conversations"), "conversations"),
        ("vqa", lambda r: r.update(image="img/missing.png"), "image img/missing.png not found"),
    ],
)
def test_records_missing_what_their_task_needs(tmp_path: Path, kind: str, edit, message: str) -> None:
    records = task_records(kind, write_images(tmp_path, 2), n=4)
    edit(records[1])
    path = write_jsonl(tmp_path / "t.jsonl", records)
    with pytest.raises(YivlError, match=message) as err:
        build_items(kind, read_task_file(path), {"parser": "default", "mode": "generate"})
    assert "\n" not in str(err.value)
    assert "t.jsonl:2" in str(err.value)


def test_malformed_and_missing_files(tmp_path: Path) -> None:
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"id": 1}\n{"id": 2,\n')
    with pytest.raises(YivlError, match=r"bad\.jsonl:2: not valid JSON"):
        read_task_file(bad)
    with pytest.raises(YivlError, match="task file not found"):
        read_task_file(tmp_path / "nope.jsonl")
    dup = write_jsonl(tmp_path / "dup.jsonl", [{"id": "a"}, {"id": "a"}])
    with pytest.raises(YivlError, match="id 'a' was already used"):
        read_task_file(dup)


def test_damaged_lists_and_oversized_records_are_refused_unread(tmp_path: Path, monkeypatch) -> None:
    """Task files are indexed as training reads them: a damaged JSON list names the place of the damage,
    and a record over max_record_bytes is refused from its size, its bytes never read."""
    from yivl.data.records import RecordFile

    damaged = tmp_path / "mix.json"
    damaged.write_text('[\n{"id": 1, "question": "q"},\n{"id": 2, "question": "q"}},\n{"id": 3}\n]\n')
    with pytest.raises(YivlError, match=r"mix\.json is not valid JSON at line 3 column 27 \(byte 56\)"):
        read_task_file(damaged)
    big = tmp_path / "big.jsonl"
    big.write_text(
        '{"id": 1, "question": "q"}\n\n' + json.dumps({"id": 2, "question": "x" * (2 << 20)}) + "\n"
    )
    reads: list[int] = []
    raw = RecordFile.raw
    monkeypatch.setattr(RecordFile, "raw", lambda self, i: reads.append(i) or raw(self, i))
    with pytest.raises(
        YivlError, match=r"big\.jsonl:3: the record is 2097\d+ bytes, over max_record_bytes=1048576"
    ):
        read_task_file(big)
    assert reads == [0]  # the 2 MB line was never read
    assert [r.id for r in read_task_file(big, max_record_bytes=4 << 20)] == ["1", "2"]


def test_webdataset_shards_read_like_jsonl(tmp_path: Path) -> None:
    images = write_images(tmp_path, 3)
    records = task_records("vqa", images, n=3)
    jsonl = read_task_file(write_jsonl(tmp_path / "vqa.jsonl", records))
    shards = tmp_path / "shards"
    shards.mkdir()
    with tarfile.open(shards / "shard-000000.tar", "w") as tar:
        for i, record in enumerate(records):
            members = {"json": json.dumps({k: v for k, v in record.items() if k != "image"}).encode()}
            members["png"] = (tmp_path / record["image"]).read_bytes()
            for ext, data in members.items():
                info = tarfile.TarInfo(f"s{i:03d}.{ext}")
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))
    from_shards = read_task_file(shards)
    assert [r.id for r in from_shards] == [r.id for r in jsonl]
    assert [r.data["answers"] for r in from_shards] == [r.data["answers"] for r in jsonl]
    assert [r.image.read() for r in from_shards] == [r.image.read() for r in jsonl]


def test_a_record_of_another_task_type_is_refused(tiny_checkpoint: Path, tmp_path: Path) -> None:
    records = [r | {"task_type": "mcq"} for r in task_records("vqa", write_images(tmp_path, 2), n=2)]
    path = write_jsonl(tmp_path / "v.jsonl", records)
    with pytest.raises(YivlError, match="task_type is 'mcq' but task vqa is vqa"):
        load_tasks(eval_config(tiny_checkpoint, tmp_path / "out", [f"vqa:{path}"]))


def test_output_dir_of_something_else_is_refused(tiny_checkpoint: Path, tmp_path: Path) -> None:
    path = write_jsonl(tmp_path / "v.jsonl", task_records("vqa", write_images(tmp_path, 2), n=2))
    out = tmp_path / "out"
    out.mkdir()
    (out / "notes.txt").write_text("mine")
    with pytest.raises(YivlError, match="not empty and holds no evaluation run"):
        run(eval_config(tiny_checkpoint, out, [f"vqa:{path}"], "resume=true"))


def test_cli_reports_bad_input_on_one_line(tmp_path: Path) -> None:
    proc = subprocess.run(
        [
            sys.executable,
            str(ROOT / "evaluate.py"),
            "tasks=[vqa:/nonexistent/x.jsonl]",
            f"output_dir={tmp_path}/o",
        ],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        timeout=120,
    )
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == [
        "error: task file not found: /nonexistent/x.jsonl; give a JSONL file or a folder of .tar shards"
    ]


def test_the_socket_guard_catches_network_use() -> None:
    import socket

    with pytest.raises(pytest.fail.Exception, match="network use"):
        socket.create_connection(("127.0.0.1", 9))
    with pytest.raises(pytest.fail.Exception, match="network use"):
        socket.getaddrinfo("example.org", 443)
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock, pytest.raises(pytest.fail.Exception):
        sock.connect(("127.0.0.1", 9))


def test_images_decoded_in_workers_equal_in_process_and_errors_stay_one_line(tmp_path: Path) -> None:
    import torch

    from yivl.data.images import ImageProcessor
    from yivl.evaluation.loader import ImageDataset, iterate_batches

    records = task_records("vqa", write_images(tmp_path, 6), n=6)
    refs = [r.image for r in read_task_file(write_jsonl(tmp_path / "v.jsonl", records))]
    dataset = ImageDataset(refs, ImageProcessor(size=28), pad=True, max_pixels=10**6)
    batches = [[0, 1], [2], [3, 4], [5]]
    in_process = list(iterate_batches(dataset, batches, num_workers=0))
    in_workers = list(iterate_batches(dataset, batches, num_workers=1))
    assert [i for i, _ in in_workers] == [[0, 1], [2], [3, 4], [5]]
    for (_, a), (_, b) in zip(in_process, in_workers, strict=True):
        assert all(torch.equal(x, y) for x, y in zip(a, b, strict=True))
    (tmp_path / refs[4].name).write_bytes(b"not a png")
    with pytest.raises(YivlError, match=r"^image img/004\.png: .*; fix or remove the image$"):
        list(iterate_batches(dataset, batches, num_workers=1))
