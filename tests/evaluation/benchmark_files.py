"""Benchmark tables shaped exactly like the published ones, each with its twin in the project's own JSONL.

VLMEvalKit TSVs are written with pandas' ``to_csv(sep='\\t', index=False)``, as VLMEvalKit writes them
(base64 image cells; a repeated image is the ``index`` of the row that holds it). lmms-eval Parquet
files are written with pyarrow, the image column a ``{bytes, path}`` struct as HF ``datasets`` stores
an Image feature (a list of them for SEED-Bench), in several row groups.
"""

from __future__ import annotations

import base64
import json
from pathlib import Path
from typing import Any

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
from PIL import Image

COLOURS = {"red": (220, 40, 40), "green": (40, 170, 60), "blue": (40, 80, 220), "yellow": (235, 200, 30)}
NAMES = list(COLOURS)


def shape_images(folder: Path, count: int) -> list[str]:
    """``count`` synthetic shapes (a coloured square on grey): PNG and JPEG alternately; relative names."""
    (folder / "img").mkdir(parents=True, exist_ok=True)
    names = []
    for i in range(count):
        img = Image.new("RGB", (40 + 8 * (i % 3), 40), (238, 238, 232))
        img.paste(COLOURS[NAMES[i % 4]], (8, 8, 30, 30))
        name = f"img/{i:03d}.{'png' if i % 2 == 0 else 'jpg'}"
        img.save(folder / name)
        names.append(name)
    return names


def b64(folder: Path, name: str) -> str:
    return base64.b64encode((folder / name).read_bytes()).decode("ascii")


def hf_image(folder: Path, name: str) -> dict[str, Any]:
    """An HF ``datasets`` Image cell."""
    return {"bytes": (folder / name).read_bytes(), "path": Path(name).name}


def write_tsv(path: Path, rows: list[dict[str, Any]]) -> Path:
    pd.DataFrame(rows).to_csv(path, sep="\t", index=False)
    return path


def write_parquet(path: Path, rows: list[dict[str, Any]]) -> Path:
    pq.write_table(pa.Table.from_pylist(rows), path, row_group_size=4)
    return path


def write_jsonl(path: Path, records: list[dict[str, Any]]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in records), encoding="utf-8")
    return path


def _vlmeval_image(folder: Path, images: list[str], i: int, holders: dict[str, int], index: int) -> str:
    """The base64 image, or, when an earlier row holds the same image, that row's index (VLMEvalKit)."""
    name = images[i % len(images)]
    if name in holders:
        return str(holders[name])
    holders[name] = index
    return b64(folder, name)


def yesno_files(folder: Path, images: list[str], kind: str) -> dict[str, Path]:
    """MME (pairs of questions per image), POPE and HallusionBench as TSV / Parquet plus JSONL twins."""
    rows, jsonl, lmms, holders = [], [], [], {}
    for i in range(6):
        image = images[i // 2] if kind == "mme" else images[i % 4]
        colour = NAMES[(i // 2) % 4] if i % 2 else NAMES[(i + 1) % 4]
        answer = "Yes" if i % 2 else "No"
        question = f"Is there a {colour} square in the image?"
        if kind == "mme":
            question += " Please answer yes or no."
            category = ("existence", "color", "count")[i // 2]
        elif kind == "pope":
            category = ("random", "popular", "adversarial")[i % 3]
        else:
            category = ("VD", "VS")[i % 2]
        index = 100 + i
        cell = _vlmeval_image(folder, [image], 0, holders, index)
        row = {"index": index, "image": cell, "question": question, "answer": answer, "category": category}
        record = {
            "id": str(index),
            "image": image,
            "question": question,
            "answer": answer,
            "category": category,
        }
        if kind == "hallusionbench":
            row |= {"l2-category": "chart", "set_id": i // 2, "figure_id": i % 2, "question_id": i}
        else:
            row["image_path"] = image
        if kind == "mme":
            record["pair_id"] = image
        rows.append(row)
        jsonl.append(record)
        lmms_row = {"question_id": image, "image": hf_image(folder, image), "question": question}
        lmms_row |= {"answer": answer.lower() if kind == "pope" else answer, "category": category}
        if kind == "pope":
            lmms_row = {"id": str(i), **lmms_row, "image_source": f"COCO_val2014_{i:012d}"}
        lmms.append(lmms_row)
    stem = {"mme": "MME", "pope": "POPE", "hallusionbench": "HallusionBench"}[kind]
    out = {
        "tsv": write_tsv(folder / f"{stem}.tsv", rows),
        "jsonl": write_jsonl(folder / f"{kind}.jsonl", jsonl),
    }
    if kind != "hallusionbench":
        out["parquet"] = write_parquet(folder / f"{stem}.parquet", lmms)
    return out


def _mcq_item(i: int) -> dict[str, Any]:
    choices = NAMES if i % 3 else NAMES[:3]
    return {
        "question": "What colour is the square?",
        "choices": choices,
        "answer": "ABCD"[i % len(choices)],
        "hint": "The picture shows one square." if i % 2 else None,
    }


def mcq_files(folder: Path, images: list[str], kind: str) -> dict[str, Path]:
    """MMBench, SEED-Bench, ScienceQA and MMMU: VLMEvalKit TSV, lmms-eval Parquet (where published in
    that layout) and the JSONL twins of each (their group fields differ)."""
    tsv, jsonl, lmms, lmms_jsonl, holders = [], [], [], [], {}
    for i in range(6):
        item, image, index = _mcq_item(i), images[i % 4], i
        options = {letter: text for letter, text in zip("ABCD", item["choices"], strict=False)}
        hint = item["hint"] if kind in ("mmbench", "scienceqa") else None
        question = item["question"] if kind != "mmmu" else f"<image 1> {item['question']}"
        row = {"index": index, "question": question, "hint": hint, **options, "answer": item["answer"]}
        row |= {"category": "colour", "image": _vlmeval_image(folder, [image], 0, holders, index)}
        record = {"id": str(index), "image": image, "question": question, "choices": item["choices"]}
        record |= {"answer": item["answer"], "category": "colour"}
        if hint:
            record["hint"] = hint
        if kind == "mmbench":
            row |= {"source": "synthetic", "l2-category": "attribute", "comment": None, "split": "dev"}
            record |= {"split": "dev", "pair_id": str(index)}
        if kind == "mmmu":
            row |= {"l2-category": "Art", "image_path": image, "split": "dev"}
            record["split"] = "dev"
            if i == 5:  # an open question: no options
                for letter in "ABCD":
                    row[letter] = None
                row["answer"] = NAMES[i % 4]
                record = {k: v for k, v in record.items() if k != "choices"}
                record |= {"answer": NAMES[i % 4], "question_type": "open"}
        tsv.append({k: v for k, v in row.items() if k != "hint" or kind in ("mmbench", "scienceqa")})
        jsonl.append(record)
        pq_row, pq_record = _lmms_mcq(folder, kind, image, item, index)
        lmms.append(pq_row)
        lmms_jsonl.append(pq_record)
    stem = {"mmbench": "MMBench_DEV_EN", "seedbench": "SEEDBench_IMG", "scienceqa": "ScienceQA_TEST"}
    stem["mmmu"] = "MMMU_DEV_VAL"
    out = {
        "tsv": write_tsv(folder / f"{stem[kind]}.tsv", tsv),
        "jsonl": write_jsonl(folder / f"{kind}.jsonl", jsonl),
    }
    if kind != "mmmu":
        out["parquet"] = write_parquet(folder / f"{kind}_lmms.parquet", lmms)
        out["parquet_jsonl"] = write_jsonl(folder / f"{kind}_lmms.jsonl", lmms_jsonl)
    return out


def _lmms_mcq(
    folder: Path, kind: str, image: str, item: dict[str, Any], index: int
) -> tuple[dict[str, Any], dict[str, Any]]:
    """One row of lmms-lab/MMBench, SEED-Bench or ScienceQA-IMG and its JSONL twin."""
    record = {"id": str(index), "image": image, "question": item["question"], "choices": item["choices"]}
    record["answer"] = item["answer"]
    if kind == "mmbench":
        options = {letter: "nan" for letter in "ABCD"} | dict(zip("ABCD", item["choices"], strict=False))
        row = {
            "index": index,
            "question": item["question"],
            "hint": item["hint"] or "nan",
            "answer": item["answer"],
        }
        row |= options | {"category": "colour", "image": hf_image(folder, image), "source": "synthetic"}
        row |= {"L2-category": "attribute", "comment": "nan", "split": "dev"}
        record |= {"category": "colour", "split": "dev", "pair_id": str(index)}
        return row, record | ({"hint": item["hint"]} if item["hint"] else {})
    if kind == "seedbench":
        choices = (item["choices"] + ["purple"])[:4]
        row = {"answer": item["answer"], **{f"choice_{c}": t for c, t in zip("abcd", choices, strict=True)}}
        row |= {"question": item["question"], "question_id": f"q{index}", "image": [hf_image(folder, image)]}
        row["data_type"] = "image"
        return row, record | {"id": f"q{index}", "choices": choices, "split": "image"}
    answer = "ABCD".index(item["answer"])
    row = {"image": hf_image(folder, image), "question": item["question"], "choices": item["choices"]}
    row |= {"answer": answer, "hint": item["hint"] or "", "task": "closed choice", "grade": "grade2"}
    row |= {"subject": "natural science", "topic": "colour", "category": "colour", "skill": "colours"}
    record |= {"category": "colour"} | ({"hint": item["hint"]} if item["hint"] else {})
    return row, record


def open_files(folder: Path, images: list[str]) -> dict[str, Path]:
    """TextVQA, VQAv2, GQA (questions + images Parquet) and COCO captions (lmms-eval) with JSONL twins."""
    out: dict[str, Path] = {}
    textvqa, vqav2, gqa, gqa_images, coco = [], [], [], [], []
    tj, vj, gj, cj = [], [], [], []
    for i in range(6):
        image, colour = images[i % 4], NAMES[i % 4]
        answers = [colour] * 7 + ["red", "square", colour]
        q = "What colour is the square?"
        textvqa.append(
            {"question_id": i, "question": q, "image_id": f"t{i}", "image": hf_image(folder, image)}
        )
        textvqa[-1] |= {"answers": answers, "ocr_tokens": [], "image_classes": ["square"]}
        tj.append({"id": str(i), "image": image, "question": q, "answers": answers})
        dicts = [{"answer": a, "answer_confidence": "yes", "answer_id": k + 1} for k, a in enumerate(answers)]
        kind = "other" if i % 2 else "color"
        vqav2.append(
            {"question_type": "what color is the", "multiple_choice_answer": colour, "answers": dicts}
        )
        vqav2[-1] |= {"image_id": i, "answer_type": kind, "question_id": 1000 + i, "question": q}
        vqav2[-1]["image"] = hf_image(folder, image)
        vj.append({"id": str(1000 + i), "image": image, "question": q, "answers": answers})
        vj[-1] |= {"answer_type": kind, "question_type": "what color is the"}
        gqa.append({"id": f"20{i}", "imageId": f"n{i % 4}", "question": q, "answer": colour})
        gqa[-1] |= {"fullAnswer": f"The square is {colour}.", "isBalanced": True}
        gj.append({"id": f"20{i}", "image": image, "question": q, "answers": [colour] * 10})
        captions = [
            f"a {colour} square",
            f"a {colour} box",
            "a square",
            f"{colour} on grey",
            "a small square",
        ]
        cq = "Provide a one-sentence caption for the provided image."
        coco.append({"question_id": f"{i:012d}.jpg", "image": hf_image(folder, image), "question": cq})
        coco[-1] |= {"answer": captions, "id": i, "license": 1, "file_name": f"{i:012d}.jpg", "height": 40}
        cj.append({"id": f"{i:012d}.jpg", "image": image, "question": cq, "captions": captions})
    for k in range(4):
        gqa_images.append({"id": f"n{k}", "image": hf_image(folder, images[k])})
    for name, rows, twin in (
        ("textvqa", textvqa, tj),
        ("vqav2", vqav2, vj),
        ("gqa", gqa, gj),
        ("coco", coco, cj),
    ):
        out[name] = write_parquet(folder / f"{name}_val.parquet", rows)
        out[f"{name}_jsonl"] = write_jsonl(folder / f"{name}.jsonl", twin)
    out["gqa_images"] = write_parquet(folder / "gqa_testdev_balanced_images.parquet", gqa_images)
    return out
