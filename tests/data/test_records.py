"""The record index: a JSON list indexes exactly what json.load reads, or is refused where json stops;
records over max_record_bytes are rejected without being read."""

from __future__ import annotations

import json
import random
import re
import subprocess
import sys
from pathlib import Path

import pytest

import yivl.data.records as records_module
from data_tools.cli import main
from tests.data.corpus import conv
from yivl.data.build import build_stream_source
from yivl.data.map_dataset import ConversationDataset
from yivl.data.reasons import SampleRejected, SkipCounter
from yivl.data.records import RecordFile
from yivl.data.sources import WorkerInfo
from yivl.errors import YivlError

ROOT = Path(__file__).resolve().parents[2]


def llava(i: int) -> dict:
    """A record shaped like llava_v1_5_mix665k.json's, with brackets and quotes inside its strings."""
    return {
        "id": f"{i:012d}" if i % 2 else i,
        "image": f"coco/train2017/{i:012d}.jpg",
        "conversations": [
            {"from": "human", "value": f'<image>\nWhat is in [box {i}] {{x}}? Say "why" \\ ok'},
            {"from": "gpt", "value": f"A cat, {i} [sic]."},
            {"from": "human", "value": "Anything else? ]}"},
            {"from": "gpt", "value": "No."},
        ],
    }


RECORDS = [llava(i) for i in range(6)]
PRETTY = json.dumps(RECORDS, indent=2)
DEEP = json.dumps(
    [{"id": 0, "a": [[[[[[[[{"b": "]}", "c": [1, 2.5e3, -0, True, None]}]]]]]]]]}, {"id": 1}] * 3
)
"""Nested deeper than the one-expression check reaches: read bracket by bracket, parsed by json."""


def _after_record(text: str, n: int) -> int:
    """Offset just after the ``}`` that closes top-level record ``n`` (1-based) of ``PRETTY``."""
    pos = 0
    for _ in range(n):
        pos = text.index("\n  }", pos) + 4
    return pos


def _insert(text: str, at: int, what: str) -> str:
    return text[:at] + what + text[at:]


DAMAGED = {
    "stray brace after record 2": _insert(PRETTY, _after_record(PRETTY, 2), "}"),
    "extra bracket after record 2": _insert(PRETTY, _after_record(PRETTY, 2), "]"),
    "a second list after the first": json.dumps(RECORDS[:3], indent=2) + json.dumps(RECORDS[3:], indent=2),
    "unterminated string": PRETTY.replace('"No."\n', '"No.\n', 1),
    "unterminated string, minified": json.dumps(RECORDS).replace('"No."}', '"No.}', 1),
    "trailing comma": PRETTY[:-2] + ",\n]",
    "missing comma between objects": PRETTY.replace("},\n  {", "}\n  {", 1),
    "garbage after the list": PRETTY + "\nthat's all folks",
    "truncated": PRETTY[: len(PRETTY) // 2],
    "bare word inside a record": PRETTY.replace('"No."', "No", 1),
    "missing colon": PRETTY.replace('"from": "gpt"', '"from" "gpt"', 1),
}


def _json_error(text: str) -> str:
    """Where ``json.loads`` stops, as the refusal names it."""
    try:
        json.loads(text)
    except json.JSONDecodeError as err:
        return f"not valid JSON at line {err.lineno} column {err.colno} (byte {err.pos})"
    raise AssertionError("the text is valid JSON")


@pytest.mark.parametrize("name", list(DAMAGED))
def test_a_damaged_list_is_refused_where_json_stops(tmp_path: Path, name: str) -> None:
    path = tmp_path / "llava.json"
    path.write_text(DAMAGED[name])
    with pytest.raises(YivlError) as err:
        RecordFile(path)
    message = str(err.value)
    assert f"{path} is {_json_error(DAMAGED[name])}: " in message, message
    assert "python -m json.tool llava.json" in message and "convert the file to JSONL" in message
    assert "\n" not in message


def test_the_scan_names_the_damage(tmp_path: Path) -> None:
    path = tmp_path / "d.json"
    expected = {
        "stray brace after record 2": "'}' does not close the open '['",
        "extra bracket after record 2": "more data after the list's closing ']'",
        "a second list after the first": "more data after the list's closing ']'",
        "trailing comma": "an empty element",
        "missing comma between objects": "expecting ',' delimiter",
        "truncated": "the file ends inside the list",
    }
    for name, what in expected.items():
        path.write_text(DAMAGED[name])
        with pytest.raises(YivlError, match=re.escape(what)):
            RecordFile(path)


def _variants() -> dict[str, bytes]:
    unicode = [{"id": "中文", "conversations": [{"from": "gpt", "value": "日本語 🙂 \u00e9 \\u00e9 é"}]}]
    nested = [{"a": [[1, [2, {"b": "]]}}"}]], {"c": []}], "d": {}}, [], "x", 3, None, {"e": "\\\\"}]
    return {
        "pretty": PRETTY.encode(),
        "minified": json.dumps(RECORDS, separators=(",", ":")).encode(),
        "bom": b"\xef\xbb\xbf" + PRETTY.encode(),
        "crlf": PRETTY.replace("\n", "\r\n").encode(),
        "tabs and blank lines": ("\n\n\t" + json.dumps(RECORDS, indent="\t") + "\n\n").encode(),
        "unicode": json.dumps(unicode, ensure_ascii=False, indent=1).encode(),
        "unicode escaped": json.dumps(unicode).encode(),
        "nested, non-object elements": json.dumps(nested).encode(),
        "empty": b"[ \n ]\n",
        "one record": json.dumps(RECORDS[:1]).encode(),
        "nested 10 deep": DEEP.encode(),
    }


@pytest.mark.parametrize("name", list(_variants()))
def test_valid_lists_index_exactly_what_json_reads(tmp_path: Path, name: str) -> None:
    data = _variants()[name]
    path = tmp_path / "v.json"
    path.write_bytes(data)
    expected = json.loads(data)  # bytes: json detects the BOM as json.load with utf-8-sig does
    records = RecordFile(path)
    assert len(records) == len(expected)
    assert [json.loads(records.raw(i)) for i in range(len(records))] == expected
    objects = [r for r in expected if isinstance(r, dict)]
    assert [records.record(i) for i in range(len(records)) if isinstance(expected[i], dict)] == objects


def test_invalid_utf8_inside_a_list_is_that_records_reject(tmp_path: Path) -> None:
    path = tmp_path / "bytes.json"
    path.write_bytes(b'[{"id": 1}, {"id": "\xff\xfe"}, {"id": 3}]')
    records = RecordFile(path)
    assert len(records) == 3
    with pytest.raises(SampleRejected) as err:
        records.record(1)
    assert err.value.reason == "invalid_utf8"
    assert records.record(2) == {"id": 3}


def _write_big_jsonl(path: Path, big: int = 3 << 20) -> list[dict]:
    """Three text-only records, the middle one ``big`` bytes."""
    small = [conv("First?", "one", placeholder=False), conv("Third?", "three", placeholder=False)]
    huge = conv("Second?", "word " * (big // 5), placeholder=False)
    path.write_text("\n".join(json.dumps(r) for r in (small[0], huge, small[1])) + "\n")
    return small


def test_a_record_over_the_limit_is_rejected_unread(tmp_path: Path, monkeypatch) -> None:
    path = tmp_path / "big.jsonl"
    small = _write_big_jsonl(path)
    reads: list[int] = []
    real_pread = records_module.os.pread
    monkeypatch.setattr(
        records_module.os, "pread", lambda fd, n, at: reads.append(n) or real_pread(fd, n, at)
    )
    records = RecordFile(path)  # default limit: 1 MiB
    assert len(records) == 3 and records.sizes[1] > 3 << 20
    assert [records.record(0), records.record(2)] == small
    with pytest.raises(SampleRejected) as err:
        records.record(1)
    assert err.value.reason == "record_too_large"
    assert f"{int(records.sizes[1]):,} bytes, over max_record_bytes=1,048,576" in err.value.detail
    assert max(reads) < 1 << 20  # the 3 MB record was never read
    assert RecordFile(path, max_record_bytes=4 << 20).record(1)["conversations"][0]["value"] == "Second?"


def test_an_oversized_element_is_rejected_not_parsed(tmp_path: Path) -> None:
    """An element over the limit is parsed only up to the limit (its brackets and strings all through):
    damage past that makes that one record a reject, never a shift of the others."""
    path = tmp_path / "list.json"
    inside = '{"id": "big", "conversations": [' + ", ".join(['{"from": "gpt"}'] * 40) + '], "x" 1}'
    path.write_text(f'[{{"id": 0}}, {inside}, {{"id": 2}}]')
    records = RecordFile(path, max_record_bytes=100)
    assert len(records) == 3 and records.record(2) == {"id": 2}
    with pytest.raises(SampleRejected, match="record_too_large"):
        records.record(1)
    with pytest.raises(YivlError, match="expecting ':' delimiter"):
        RecordFile(path, max_record_bytes=1 << 20)


def test_training_sources_refuse_a_damaged_list(tmp_path: Path) -> None:
    path = tmp_path / "train.json"
    path.write_text(DAMAGED["stray brace after record 2"])
    where = re.escape(_json_error(DAMAGED["stray brace after record 2"]))
    with pytest.raises(YivlError, match=where):
        ConversationDataset(path, tmp_path)
    with pytest.raises(YivlError, match=where):
        build_stream_source({"type": "json", "path": str(path)}, 0)


def test_training_sources_skip_a_record_over_the_limit(tmp_path: Path, tokenizer) -> None:
    from yivl.data.encode import SampleEncoder
    from yivl.data.images import ImageProcessor

    path = tmp_path / "big.jsonl"
    _write_big_jsonl(path)
    encoder = SampleEncoder(tokenizer, ImageProcessor(28), 4, 512)
    dataset = ConversationDataset(path, tmp_path, encoder, max_record_bytes=1 << 20)
    assert dataset[1].key == "big.jsonl:2"  # replaced by the next record
    assert dataset.skips.counts() == {"record_too_large": 1}
    source = build_stream_source({"type": "json", "path": str(path)}, 0, max_record_bytes=1 << 20)
    skips = SkipCounter()
    items = list(source.items(0, "t", WorkerInfo(), skips, False, 0))
    assert len(items) == 2 and skips.counts() == {"record_too_large": 1}


def test_data_tools_refuse_a_damaged_list_in_one_line(tmp_path: Path, tiny_checkpoint: Path, capsys) -> None:
    path = tmp_path / "llava.json"
    path.write_text(DAMAGED["extra bracket after record 2"])
    for argv in (
        ["validate", str(path), "--model-path", str(tiny_checkpoint)],
        ["convert", str(path), "--output-dir", str(tmp_path / "out"), "--model-path", str(tiny_checkpoint)],
    ):
        with pytest.raises(SystemExit) as err:
            main(argv)
        assert err.value.code == 2
        message = capsys.readouterr().err
        assert message.count("\n") == 1 and _json_error(path.read_text()) in message, message
    assert not (tmp_path / "out").exists()  # refused before anything is written
    proc = subprocess.run(
        [sys.executable, "-m", "data_tools", "validate", str(path), "--model-path", str(tiny_checkpoint)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert proc.stderr.startswith("error: ") and proc.stderr.count("\n") == 1, proc.stderr


def test_random_damage_is_never_indexed_short(tmp_path: Path) -> None:
    """Random edits to a list: what json reads is indexed exactly, what json refuses is refused."""
    rng = random.Random(0)
    path = tmp_path / "edited.json"
    refused = 0
    for text in [PRETTY, json.dumps(RECORDS), DEEP] * 100:
        chars = list(text)
        for _ in range(rng.randint(1, 2)):
            i = rng.randrange(len(chars))
            if rng.random() < 0.5:
                del chars[i]
            else:
                chars.insert(i, rng.choice('{}[],:" \\\nx1'))
        path.write_text("".join(chars))
        try:
            expected = json.loads("".join(chars))
        except json.JSONDecodeError:
            with pytest.raises(YivlError, match=r"is not valid JSON at line|does not start with"):
                RecordFile(path)
            refused += 1
            continue
        records = RecordFile(path)
        assert [json.loads(records.raw(i)) for i in range(len(records))] == expected
    assert 100 < refused < 250  # both kinds were exercised


def test_a_shard_record_over_the_limit_is_skipped_in_training(tmp_path: Path) -> None:
    from yivl.data.shards import TarShardWriter

    writer = TarShardWriter(tmp_path / "shard-000000.tar")
    writer.write("000000000", {"json": json.dumps(conv("Small?", "yes", placeholder=False)).encode()})
    writer.write("000000001", {"json": json.dumps(conv("Big?", "x" * 5000, placeholder=False)).encode()})
    writer.close()
    source = build_stream_source({"type": "conversation_shards", "urls": str(tmp_path)}, 0, 4096)
    skips = SkipCounter()
    items = list(source.items(0, "t", WorkerInfo(), skips, False, 0))
    assert [item.key for item in items] == ["shard-000000.tar:000000000"]
    assert skips.counts() == {"record_too_large": 1}


def test_jsonl_with_a_bom_and_crlf_keeps_every_line(tmp_path: Path) -> None:
    path = tmp_path / "win.jsonl"
    path.write_bytes(b"\xef\xbb\xbf" + b"\r\n".join(json.dumps(r).encode() for r in RECORDS) + b"\r\n")
    records = RecordFile(path)
    assert [records.record(i) for i in range(len(records))] == RECORDS
