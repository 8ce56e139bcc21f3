"""A small synthetic dataset: coloured shapes and questions with short, exact answers.

The default training job and the tests use it; nothing is downloaded. The answer vocabulary is small
(4 colours, 3 shapes, counts 1-3, left/right, yes/no, option letters) so a tiny model learns it in
minutes on a CPU, and ``evaluate.py`` can score it exactly. Generation is deterministic in ``seed``.

Layout under ``root``: ``images/*.png``, ``train.jsonl`` and ``val.jsonl`` (Yi-VL/LLaVA conversation
records, image paths relative to ``root``), ``eval_vqa.jsonl``, ``eval_yesno.jsonl``, ``eval_mcq.jsonl``
(held-out images, evaluation schema) and ``synthetic.json`` (the parameters; written last).
"""

from __future__ import annotations

import contextlib
import json
import os
import random
import shutil
from dataclasses import dataclass
from pathlib import Path

from PIL import Image, ImageDraw

from yivl.constants import IMAGE_PLACEHOLDER
from yivl.errors import YivlError

VERSION = 1
COLOURS: dict[str, tuple[int, int, int]] = {
    "red": (220, 40, 40),
    "green": (40, 170, 60),
    "blue": (40, 80, 220),
    "yellow": (235, 200, 30),
}
SHAPES = ("circle", "square", "triangle")
SHORT_ANSWER = "\nAnswer the question using a single word or phrase."
MCQ_SUFFIX = "\nAnswer with the option's letter from the given choices directly."
MARKER = "synthetic.json"
_SIZES = ((112, 112), (128, 112), (112, 128), (144, 144))


@dataclass(frozen=True)
class Shape:
    kind: str
    colour: str
    col: int  # 0..2, left to right
    row: int


@dataclass(frozen=True)
class Scene:
    size: tuple[int, int]
    shapes: tuple[Shape, ...]


def random_scene(rng: random.Random) -> Scene:
    """1-3 shapes with distinct colours and kinds in distinct cells of a 3x3 grid."""
    n = rng.choice((1, 1, 2, 3))
    colours = rng.sample(list(COLOURS), n)
    kinds = rng.sample(SHAPES, n)
    if n == 1:  # a single shape sits clearly left or right, so the position question has one answer
        cells = [(rng.choice((0, 2)), rng.randrange(3))]
    else:
        cells = rng.sample([(c, r) for c in range(3) for r in range(3)], n)
    shapes = tuple(Shape(k, c, col, row) for k, c, (col, row) in zip(kinds, colours, cells, strict=True))
    return Scene(rng.choice(_SIZES), shapes)


def draw_scene(scene: Scene, rng: random.Random) -> Image.Image:
    """Render a scene on a light background; shape size and offset vary a little."""
    w, h = scene.size
    img = Image.new("RGB", scene.size, (238, 238, 232))
    draw = ImageDraw.Draw(img)
    cw, ch = w / 3, h / 3
    for s in scene.shapes:
        cx = (s.col + 0.5) * cw + rng.uniform(-0.08, 0.08) * cw
        cy = (s.row + 0.5) * ch + rng.uniform(-0.08, 0.08) * ch
        r = min(cw, ch) * rng.uniform(0.32, 0.44)
        box = (cx - r, cy - r, cx + r, cy + r)
        fill = COLOURS[s.colour]
        if s.kind == "circle":
            draw.ellipse(box, fill=fill)
        elif s.kind == "square":
            draw.rectangle(box, fill=fill)
        else:
            draw.polygon([(cx, cy - r), (cx + r, cy + r), (cx - r, cy + r)], fill=fill)
    return img


def _qa_pairs(scene: Scene, rng: random.Random) -> list[tuple[str, str, str]]:
    """Questions about the scene as ``(kind, question, answer)``; kind is vqa, yesno or the answer type."""
    shapes = scene.shapes
    pairs = [("number", "How many shapes are there?", str(len(shapes)))]
    if len(shapes) == 1:
        s = shapes[0]
        pairs += [
            ("other", "What colour is the shape?", s.colour),
            ("other", "What shape is this?", s.kind),
            ("other", "Is the shape on the left or the right?", "left" if s.col == 0 else "right"),
        ]
    else:
        s = rng.choice(shapes)
        pairs.append(("other", f"What colour is the {s.kind}?", s.colour))
    colour = rng.choice(list(COLOURS))
    present = any(s.colour == colour for s in shapes)
    pairs.append(("yes/no", f"Is there a {colour} shape?", "yes" if present else "no"))
    return pairs


def _mcq(scene: Scene, rng: random.Random) -> tuple[str, list[str], str]:
    """A colour question with four options; returns (question, choices, answer letter)."""
    s = rng.choice(scene.shapes)
    choices = list(COLOURS)
    rng.shuffle(choices)
    return f"What colour is the {s.kind}?", choices, "ABCD"[choices.index(s.colour)]


def mcq_prompt(question: str, choices: list[str]) -> str:
    """LLaVA-1.5 style multiple-choice prompt: the question, lettered options, the letter instruction."""
    options = "\n".join(f"{'ABCD'[i]}. {c}" for i, c in enumerate(choices))
    return f"{question}\n{options}{MCQ_SUFFIX}"


def _conversation(scene: Scene, rng: random.Random) -> list[dict]:
    """One or two question/answer turns; the first human turn carries the image placeholder."""
    pairs = [(q + SHORT_ANSWER, a) for _, q, a in _qa_pairs(scene, rng)]
    if rng.random() < 0.2:
        q, choices, letter = _mcq(scene, rng)
        pairs.append((mcq_prompt(q, choices), letter))
    chosen = rng.sample(pairs, rng.choice((1, 1, 2)))
    turns = []
    for i, (q, a) in enumerate(chosen):
        text = f"{IMAGE_PLACEHOLDER}\n{q}" if i == 0 else q
        turns += [{"from": "human", "value": text}, {"from": "gpt", "value": a}]
    return turns


def _text_only(rng: random.Random, key: str) -> dict:
    question, answer = rng.choice(
        [
            ("Which colours can the shapes have?", "red, green, blue or yellow"),
            ("Which shapes can appear?", "circle, square or triangle"),
            ("What is the largest number of shapes in a picture?", "3"),
        ]
    )
    return {
        "id": key,
        "conversations": [{"from": "human", "value": question}, {"from": "gpt", "value": answer}],
    }


def _write_image(root: Path, name: str, scene: Scene, rng: random.Random) -> str:
    rel = f"images/{name}.png"
    draw_scene(scene, rng).save(root / rel, compress_level=1)
    return rel


def _write_split(root: Path, split: str, n: int, seed: int) -> None:
    with open(root / f"{split}.jsonl", "w", encoding="utf-8") as f:
        for i in range(n):
            key = f"synth-{split}-{i:06d}"
            rng = random.Random(f"{seed}-{key}")
            if rng.random() < 0.02:
                record = _text_only(rng, key)
            else:
                scene = random_scene(rng)
                rel = _write_image(root, f"{split}-{i:06d}", scene, rng)
                record = {"id": key, "image": rel, "conversations": _conversation(scene, rng)}
            f.write(json.dumps(record, ensure_ascii=False) + "\n")


def _write_eval(root: Path, n: int, seed: int) -> None:
    with contextlib.ExitStack() as stack:
        files = {
            name: stack.enter_context(open(root / f"eval_{name}.jsonl", "w", encoding="utf-8"))
            for name in ("vqa", "yesno", "mcq")
        }
        for i in range(n):
            key = f"synth-eval-{i:06d}"
            rng = random.Random(f"{seed}-{key}")
            scene = random_scene(rng)
            rel = _write_image(root, f"eval-{i:06d}", scene, rng)
            kind, question, answer = rng.choice(_qa_pairs(scene, rng))
            if kind == "yes/no":
                row = {"task_type": "yesno", "question": question, "answer": answer}
                files["yesno"].write(json.dumps({"id": key, "image": rel, **row}) + "\n")
            else:
                row = {
                    "task_type": "vqa",
                    "question": question,
                    "answers": [answer] * 10,
                    "answer_type": kind,
                }
                files["vqa"].write(json.dumps({"id": key, "image": rel, **row}) + "\n")
            q, choices, letter = _mcq(scene, rng)
            row = {"task_type": "mcq", "question": q, "choices": choices, "answer": letter}
            files["mcq"].write(json.dumps({"id": key + "-mcq", "image": rel, **row}) + "\n")


def _params(num_train: int, num_val: int, seed: int) -> dict:
    return {"version": VERSION, "num_train": num_train, "num_val": num_val, "seed": seed}


def _is_complete(root: Path, params: dict) -> bool:
    try:
        return json.loads((root / MARKER).read_text()) == params
    except (OSError, ValueError):
        return False


def ensure_synthetic_dataset(
    root: str | Path, num_train: int = 2000, num_val: int = 200, seed: int = 0
) -> Path:
    """Generate the synthetic dataset under ``root`` unless it is already there with these parameters.

    Safe when several processes call it at once (each builds in a private folder, the first rename
    wins). A non-empty ``root`` that is not a synthetic dataset is never touched.
    """
    root = Path(root)
    params = _params(num_train, num_val, seed)
    if _is_complete(root, params):
        return root
    if root.exists() and any(root.iterdir()) and not (root / MARKER).exists():
        raise YivlError(f"{root} exists and is not a synthetic dataset; point data at an empty or new folder")
    tmp = root.with_name(f".{root.name}.tmp-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    (tmp / "images").mkdir(parents=True)
    _write_split(tmp, "train", num_train, seed)
    _write_split(tmp, "val", num_val, seed)
    _write_eval(tmp, num_val, seed)
    (tmp / MARKER).write_text(json.dumps(params))
    if _is_complete(root, params):  # another process finished first
        shutil.rmtree(tmp)
        return root
    if root.exists():  # ours, but older or with other parameters
        shutil.rmtree(root)
    try:
        os.replace(tmp, root)
    except OSError:
        shutil.rmtree(tmp, ignore_errors=True)
        if not _is_complete(root, params):
            raise
    return root
