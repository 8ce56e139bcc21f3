"""Files shaped exactly like the public LLaVA / ShareGPT4V / LLaVA-Instruct releases, with tiny images in
their real nested folders (``coco/train2017/...``, ``gqa/images/...``), generated on the spot.

The shapes follow the published files: ``llava_v1_5_mix665k.json`` (a JSON list; ``<image>`` first or
last in the first human turn, ``\\n``-separated; ShareGPT text-only records with ``"model": ""``, some
starting with the assistant; OCR-VQA's integer ids), ShareGPT4V's caption files
(``share-captioner_coco_lcs_sam_1246k_1107.json``) and ``llava_instruct_150k.json`` (image names
relative to ``coco/train2017``, many turns).
"""

from __future__ import annotations

import io
import json
from pathlib import Path

from PIL import Image

Q = "\nAnswer the question using a single word or phrase."


def _image(path: Path, colour: tuple[int, int, int]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    buf = io.BytesIO()
    Image.new("RGB", (24, 16), colour).save(buf, format="PNG" if path.suffix == ".png" else "JPEG")
    path.write_bytes(buf.getvalue())


def _turns(*values: str, first: str = "human") -> list[dict]:
    roles = ("human", "gpt") if first == "human" else ("gpt", "human")
    return [{"from": roles[i % 2], "value": v} for i, v in enumerate(values)]


def mix665k_records() -> list[dict]:
    """20 records as in llava_v1_5_mix665k.json: 15 with an image (6 sources), 5 text-only ShareGPT."""
    return [
        {
            "id": "000000033471",
            "image": "coco/train2017/000000033471.jpg",
            "conversations": _turns(
                "<image>\nWhat are the colors of the bus in the image?",
                "The bus in the image is white and red.",
                "What feature can be seen on the back of the bus?",
                "The back of the bus features an advertisement.",
            ),
        },
        {
            "id": "000000052846",
            "image": "coco/train2017/000000052846.jpg",
            "conversations": _turns(
                "Where is the cat positioned in the image?\n<image>",
                "The cat is on the windowsill.",
            ),
        },
        {
            "id": "2354786",
            "image": "gqa/images/2354786.jpg",
            "conversations": _turns(
                f"<image>\nIs the sky dark?{Q}",
                "Yes",
                f"What is on the white wall?{Q}",
                "Pipe",
                f"Is that pipe red?{Q}",
                "No",
            ),
        },
        {
            "id": 71019,
            "image": "ocr_vqa/images/71019.jpg",
            "conversations": _turns(
                "<image>\nWho wrote this book?",
                "Sandra Boynton",
                "What is the title of this book?",
                "Moo, Baa, La La La!",
                "Is this a child related book?",
                "Yes",
            ),
        },
        {
            "id": 140031996,
            "image": "ocr_vqa/images/140031996.jpg",
            "conversations": _turns(
                "Who is the author of this book?\n<image>",
                "Mary Shelley",
            ),
        },
        {
            "id": "0a0bc91825468c45",
            "image": "textvqa/train_images/0a0bc91825468c45.jpg",
            "conversations": _turns(
                f"<image>\nwhat is the brand of this camera?\nReference OCR token: dakota, digital{Q}",
                "Dakota",
            ),
        },
        {
            "id": "1",
            "image": "vg/VG_100K/1.jpg",
            "conversations": _turns(
                "<image>\nPlease provide a short description for this region: [0.41, 0.53, 0.58, 0.68]",
                "A white clock on the wall.",
            ),
        },
        {
            "id": "2",
            "image": "vg/VG_100K_2/2.jpg",
            "conversations": _turns(
                "Please provide the bounding box coordinate of the region this sentence describes: "
                "a tree.\n<image>",
                "[0.0, 0.1, 0.3, 0.6]",
            ),
        },
        {
            "id": "000000000009",
            "image": "coco/train2017/000000000009.jpg",
            "conversations": _turns(
                "What do you see happening in this image?\n<image>",
                "Food is served in four containers.",
                "What kind of food is it?",
                "Broccoli, bread and fruit.",
            ),
        },
        {
            "id": "2405115",
            "image": "gqa/images/2405115.jpg",
            "conversations": _turns(
                f"Who is wearing the shirt?{Q}\n<image>",
                "Man",
            ),
        },
        {
            "id": "000000558842",
            "image": "coco/train2017/000000558842.jpg",
            "conversations": _turns(
                "<image>\nWhat is the man doing?",
                "He is surfing a large wave.",
            ),
        },
        {
            "id": "4b1e3c",
            "image": "textvqa/train_images/4b1e3c.jpg",
            "conversations": _turns(
                f"what number is on the jersey?{Q}\n<image>",
                "23",
            ),
        },
        {
            "id": "000000201427",
            "image": "coco/train2017/000000201427.jpg",
            "conversations": _turns(
                "<image>\nHow many people are in the picture?",
                "Three.",
                "Are they outside?",
                "Yes, in a park.",
            ),
        },
        {
            "id": "2317",
            "image": "gqa/images/2317.jpg",
            "conversations": _turns(f"<image>\nIs it sunny?{Q}", "No"),
        },
        {
            "id": 441002,
            "image": "ocr_vqa/images/441002.jpg",
            "conversations": _turns(
                "Is this book related to History?\n<image>",
                "No",
            ),
        },
        {
            "id": "i6IyJda_0",
            "model": "",
            "conversations": _turns(
                "How to tell if a customer segment is well segmented? In 3 bullet points.",
                "1. Homogeneity\n2. Distinctiveness\n3. Stability",
            ),
        },
        {
            "id": "A5AbcES_0",
            "model": "",
            "conversations": _turns(
                "Hello! How can I help you today?",
                "Write a haiku about rain.",
                "Soft rain on the roof",
                first="gpt",
            ),
        },
        {
            "id": "hRPXBBT_0",
            "model": "",
            "conversations": _turns(
                "Summarize this in one line: the meeting moved to Friday.",
                "The meeting is now on Friday.",
                "And in French?",
                "La réunion a lieu vendredi.",
            ),
        },
        {
            "id": "wSc8hJs_12",
            "model": "",
            "conversations": _turns(
                "Sure, here is the continuation.",
                "Thanks. What does <image> mean in HTML?",
                "Nothing: the tag is <img>.",
                first="gpt",
            ),
        },
        {"id": "Qk7bMbn_0", "model": "", "conversations": _turns("Say hi.", "Hi!")},
    ]


def sharegpt4v_records() -> list[dict]:
    """8 caption records as in share-captioner_coco_lcs_sam_1246k_1107.json and
    sharegpt4v_instruct_gpt4-vision_cap100k.json."""
    images = [
        "coco/train2017/000000000009.jpg",
        "coco/train2017/000000000025.jpg",
        "llava/llava_pretrain/images/00000/000000010.jpg",
        "llava/llava_pretrain/images/00000/000000012.jpg",
        "sam/images/sa_1.jpg",
        "sam/images/sa_2.jpg",
        "wikiart/images/a.jpg",
        "web-celebrity/images/b.jpg",
    ]
    prompts = ["What do you see happening in this image?\n<image>", "<image>\nDescribe the image in detail."]
    return [
        {
            "id": Path(image).stem,
            "image": image,
            "conversations": _turns(
                prompts[i % 2],
                f"The image shows scene number {i}, with several objects arranged on a table.",
            ),
        }
        for i, image in enumerate(images)
    ]


def llava_instruct_records() -> list[dict]:
    """6 multi-turn records as in llava_instruct_150k.json (image names relative to coco/train2017)."""
    out = []
    for i in range(6):
        first = f"<image>\nWhat is object {i} doing?" if i % 2 else f"What is object {i} doing?\n<image>"
        values = [first, f"Object {i} is resting.", "Why might it be there?", f"Because of reason {i}."]
        if i % 3 == 0:
            values += ["Anything else?", "Nothing else stands out."]
        out.append({"id": f"{i:012d}", "image": f"{i:012d}.jpg", "conversations": _turns(*values)})
    return out


def write_public(folder: Path, name: str, records: list[dict], image_root: str = "") -> Path:
    """``folder/name`` (a JSON list, indented like the releases) and a tiny image for every record under
    ``folder/images/<image_root>``; returns the JSON path (its image folder is ``folder/images``)."""
    for i, record in enumerate(records):
        if "image" in record:
            _image(folder / "images" / image_root / record["image"], (40 * (i % 6), 90, 200 - 10 * i % 200))
    path = folder / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(records, indent=2, ensure_ascii=False))
    return path
