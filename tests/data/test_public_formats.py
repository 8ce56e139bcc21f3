"""Public files as users hold them: LLaVA mix665k, ShareGPT4V, LLaVA-Instruct, read as they are.

The `<image>` token (first or last) lands where LLaVA puts it, repairs are counted, extra keys pass
through, and a source that loses too many records stops with one line that names the way out.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from data_tools.cli import main
from tests.data.public_formats import (
    llava_instruct_records,
    mix665k_records,
    sharegpt4v_records,
    write_public,
)
from tests.data.test_chat import supervised_runs
from yivl.constants import IMAGE_PLACEHOLDER, IMAGE_TOKEN_INDEX
from yivl.data.chat import SYSTEM_PROMPT
from yivl.data.collate import Collator
from yivl.data.encode import SampleEncoder
from yivl.data.formats import normalize_record
from yivl.data.guard import RejectGuard
from yivl.data.images import ImageProcessor
from yivl.data.reasons import SampleRejected, SkipCounter
from yivl.data.shards import read_tar_samples
from yivl.data.sources import JsonSource
from yivl.data.streaming import StreamingDataset
from yivl.errors import YivlError
from yivl.evaluation.registry import build_items
from yivl.evaluation.sources import read_task_file

ROOT = Path(__file__).resolve().parents[2]
PUBLIC = {
    "mix665k": ("llava_v1_5_mix665k.json", mix665k_records, ""),
    "sharegpt4v": ("share-captioner_coco_lcs_sam_1246k_1107.json", sharegpt4v_records, ""),
    "llava_instruct": ("llava_instruct_150k.json", llava_instruct_records, "coco/train2017"),
}


@pytest.fixture(scope="module")
def public(tmp_path_factory: pytest.TempPathFactory) -> dict[str, tuple[Path, Path]]:
    """Each public shape written once: ``name -> (json file, image folder)``."""
    folder = tmp_path_factory.mktemp("public")
    out = {}
    for name, (filename, records, root) in PUBLIC.items():
        path = write_public(folder / name, filename, records(), root)
        out[name] = (path, folder / name / "images" / root)
    return out


@pytest.fixture(scope="module")
def encoder(tokenizer) -> SampleEncoder:
    return SampleEncoder(tokenizer, ImageProcessor(size=28), num_image_tokens=4, max_length=1024)


@pytest.mark.parametrize(
    "index", [0, 1, 2, 4, 9]
)  # <image> first, last, first (3 turns), last, after a suffix
def test_the_image_token_lands_where_llava_puts_it(encoder, tokenizer, index: int) -> None:
    record = mix665k_records()[index]
    question = record["conversations"][0]["value"].replace("<image>", "").strip()
    example = encoder.encode_text(record, "r").example
    ids = example.input_ids
    at = ids.index(IMAGE_TOKEN_INDEX)
    assert ids.count(IMAGE_TOKEN_INDEX) == 1
    assert tokenizer.decode(ids[:at]) == f"{SYSTEM_PROMPT}\n\n### Human: "
    assert tokenizer.decode(ids[at + 1 :]).startswith(f"\n{question}\n### Assistant: ")
    replies = [t["value"] for t in record["conversations"][1::2]]
    assert [tokenizer.decode(run) for run in supervised_runs(example.labels)] == [
        f" {reply}\n###" for reply in replies
    ]


def test_records_keep_their_keys_and_repairs_are_named(encoder, tokenizer) -> None:
    records = mix665k_records()
    ocr = encoder.encode_text(records[3], "r3")
    assert ocr.record["id"] == 71019 and ocr.repairs == ()
    first_gpt = encoder.encode_text(records[16], "r16")
    assert first_gpt.repairs == ("assistant_first_dropped",)
    assert first_gpt.record["model"] == "" and first_gpt.record["id"] == "A5AbcES_0"
    assert [t["from"] for t in first_gpt.record["conversations"]] == ["human", "gpt"]
    assert tokenizer.decode(supervised_runs(first_gpt.example.labels)[0]) == " Soft rain on the roof\n###"
    # a text-only record keeps a literal <image> as text (LLaVA only maps it in image records)
    html = encoder.encode_text(records[18], "r18")
    assert html.image is None and "What does <image> mean in HTML?" in tokenizer.decode(
        html.example.input_ids
    )
    assert records[16]["conversations"][0]["from"] == "gpt"  # the input record is not changed


def test_a_token_in_a_later_turn_or_twice_is_repaired() -> None:
    later = {
        "image": "a.jpg",
        "conversations": [
            {"from": "human", "value": "Hi"},
            {"from": "gpt", "value": "Hello"},
            {"from": "human", "value": "What is this?\n<image>"},
            {"from": "gpt", "value": "A cat."},
        ],
    }
    moved = normalize_record(later)
    assert moved.repairs == ("placeholder_moved",)
    assert [t["value"] for t in moved.record["conversations"][::2]] == [
        f"{IMAGE_PLACEHOLDER}\nHi",
        "What is this?",
    ]
    twice = {"image": "a.jpg", "conversations": [{"from": "human", "value": "<image> x <image>"}]}
    assert normalize_record(twice).repairs == ("placeholder_deduplicated",)
    assert normalize_record(twice).record["conversations"][0]["value"] == f"{IMAGE_PLACEHOLDER}\nx"


def test_an_unknown_token_is_rejected_with_the_fix_and_accepted_once_listed(tokenizer) -> None:
    record = {
        "image": "a.jpg",
        "conversations": [{"from": "human", "value": "<img>\nQ?"}, {"from": "gpt", "value": "A"}],
    }
    default = SampleEncoder(tokenizer, None, 4, 1024)
    with pytest.raises(SampleRejected) as err:
        default.encode_text(record, "r")
    assert err.value.reason == "placeholder_missing"
    assert str(err.value) == (
        "placeholder_missing: r: an image but none of the image tokens <image_placeholder>, <image> in a "
        "human turn; add the record's token to image_tokens (data config, task_options.loss) or "
        "--image-tokens (data_tools)"
    )
    custom = SampleEncoder(tokenizer, None, 4, 1024, image_tokens=["<img>"])
    assert custom.encode_text(record, "r").record["conversations"][0]["value"] == f"{IMAGE_PLACEHOLDER}\nQ?"


def _convert(path: Path, images: Path, out: Path, model: Path, *extra: str) -> int:
    argv = [
        "convert",
        str(path),
        "--image-folder",
        str(images),
        "--output-dir",
        str(out),
        "--model-path",
        str(model),
    ]
    return main([*argv, "--processes", "1", *extra])


@pytest.mark.parametrize(
    "name, images, repaired",
    [("mix665k", 15, {"assistant_first_dropped": 2}), ("sharegpt4v", 8, {}), ("llava_instruct", 6, {})],
)
def test_public_files_convert_and_validate(
    public, tiny_checkpoint: Path, tmp_path: Path, capsys, name: str, images: int, repaired: dict
) -> None:
    path, folder = public[name]
    records = json.loads(path.read_text())
    argv = ["validate", str(path), "--image-folder", str(folder), "--model-path", str(tiny_checkpoint)]
    assert main([*argv, "--processes", "1"]) == 0
    n, repairs = len(records), sum(repaired.values())
    note = f" ({repairs} repairs)" if repairs else ""
    assert f"{n} records: {n} usable{note}, 0 rejected" in capsys.readouterr().out
    out = tmp_path / "shards"
    assert _convert(path, folder, out, tiny_checkpoint) == 0
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["records"] == {
        "input": n,
        "written": n,
        "rejected": 0,
        "repaired": sum(repaired.values()),
    }
    assert manifest["repaired_by_reason"] == repaired and manifest["reconciled"]
    assert manifest["images"] == {
        "passed_through": images,
        **({"text_only": n - images} if n > images else {}),
    }
    written = [json.loads(s["json"]) for p in sorted(out.glob("*.tar")) for s in read_tar_samples(p)]
    assert [r["id"] for r in written] == [r["id"] for r in records]  # integer ids stay integers
    for before, after in zip(records, written, strict=True):
        assert set(after) == set(before)  # "model" and the other keys pass through
        if "image" in before:
            assert after["conversations"][0]["value"].startswith(f"{IMAGE_PLACEHOLDER}\n")
            assert "<image>" not in json.dumps(after["conversations"])


def _reply_empty(records: list[dict], n: int) -> list[dict]:
    for record in records[-n:]:
        record["conversations"][-1]["value"] = ""
    return records


def test_data_tools_stop_when_too_many_records_are_rejected(
    public, tiny_checkpoint: Path, tmp_path: Path
) -> None:
    _, folder = public["mix665k"]
    bad = tmp_path / "mix.json"
    bad.write_text(json.dumps(_reply_empty(mix665k_records(), 3)))  # 3 text-only records of 20
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    argv = [sys.executable, "-m", "data_tools", "validate", str(bad), "--image-folder", str(folder)]
    argv += ["--model-path", str(tiny_checkpoint), "--processes", "1"]
    done = subprocess.run(argv, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 2 and "Traceback" not in done.stderr
    assert done.stderr.strip() == (
        f"error: {bad}: 3 of 20 records rejected (15.0% > --max-reject-fraction=0.05), top reasons: "
        "reply_empty=3 (an assistant reply is empty); fix them (`python -m data_tools validate` lists them) "
        "or accept the loss with --max-reject-fraction=1"
    )
    assert main([*argv[3:], "--max-reject-fraction", "0.2"]) == 0
    out = tmp_path / "out"
    with pytest.raises(SystemExit) as stop:
        _convert(bad, folder, out, tiny_checkpoint)
    assert stop.value.code == 2
    assert len((out / "rejects.jsonl").read_text().splitlines()) == 3  # what was done is kept
    assert json.loads((out / "manifest.json").read_text())["records"]["written"] == 17
    assert _convert(bad, folder, tmp_path / "ok", tiny_checkpoint, "--max-reject-fraction", "1") == 0


def test_all_image_records_rejected_is_an_error_whatever_the_fraction(
    public, tiny_checkpoint: Path, capsys
) -> None:
    path, folder = public["mix665k"]
    argv = [
        "validate",
        str(path),
        "--image-folder",
        str(folder / "nowhere"),
        "--model-path",
        str(tiny_checkpoint),
    ]
    with pytest.raises(SystemExit) as stop:
        main([*argv, "--processes", "1", "--max-reject-fraction", "1"])
    assert stop.value.code == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith(f"error: {path}: all 15 image records were rejected, top reasons: image_missing=15")
    assert len(err.splitlines()) == 1


def test_a_stream_stops_once_its_running_fraction_is_too_high(tokenizer, tmp_path: Path) -> None:
    lines = []
    for i in range(300):
        reply = "" if i % 4 == 0 else f"answer {i}"  # a quarter rejected
        turns = [{"from": "human", "value": f"q {i}"}, {"from": "gpt", "value": reply}]
        lines.append(json.dumps({"id": i, "model": "", "conversations": turns}))
    path = tmp_path / "stream.jsonl"
    path.write_text("\n".join(lines) + "\n")
    skips = SkipCounter()
    ds = StreamingDataset([JsonSource(path)], batch_size=4, batches_per_epoch=None, skips=skips)
    ds.guard = RejectGuard(skips, 0.05, "the training data")
    ds.bind(SampleEncoder(tokenizer, ImageProcessor(size=28), 4, 1024), Collator(28, tokenizer.pad_token_id))
    with pytest.raises(YivlError, match=r"^the training data: \d+ of 200 records rejected \(2\d\.\d% > "):
        list(ds)
    ds.skips = SkipCounter()
    ds.guard = RejectGuard(ds.skips, 0.3, "the training data")  # a quarter is accepted under 0.3
    assert sum(len(batch["input_ids"]) for batch in ds) == 225
    assert ds.skips.counts() == {"reply_empty": 75}


def test_the_loss_task_reads_llava_records(public) -> None:
    _, folder = public["mix665k"]
    task = folder / "loss.json"
    task.write_text(json.dumps(mix665k_records()[:3]))
    items = build_items("loss", read_task_file(task), {"image_tokens": ["<image_placeholder>", "<image>"]})
    assert [item.turns[0].text.split("\n")[0] for item in items] == [IMAGE_PLACEHOLDER] * 3
    assert items[1].turns[0].text == f"{IMAGE_PLACEHOLDER}\nWhere is the cat positioned in the image?"
