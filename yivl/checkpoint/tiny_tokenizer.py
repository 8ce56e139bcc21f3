"""A small SentencePiece tokenizer with Yi's special ids, trained on the spot for the tiny model.

Settings follow Yi's tokenizer where they shape the chat format: BPE, byte fallback, no dummy prefix
(so a chunk after the image placeholder starts without an extra space), no normalization. The corpus
is generated here, so the same code writes the same ``tokenizer.model`` bytes every time.
"""

from __future__ import annotations

import io
import random
from pathlib import Path

import sentencepiece as spm

from yivl.data.chat import SYSTEM_PROMPT
from yivl.data.tokenizer import YI_ADDED_TOKENS, YiTokenizer
from yivl.errors import YivlError

MIN_VOCAB, MAX_VOCAB = 400, 2000
"""Vocabulary sizes the built-in corpus supports (bytes + characters below, available merges above)."""

_COLOURS = ["red", "green", "blue", "yellow", "orange", "purple"]
_COLOURS += ["black", "white", "grey", "pink", "brown", "cyan"]
_SHAPES = ["circle", "square", "triangle", "rectangle", "star", "diamond"]
_SHAPES += ["hexagon", "oval", "cross", "heart", "line", "dot"]
_PLACES = [
    "in the top left corner",
    "in the top right corner",
    "in the bottom left corner",
    "in the bottom right corner",
    "in the center",
    "near the left edge",
    "near the right edge",
    "at the top",
    "at the bottom",
]
_SIZES = ["small", "large", "tiny", "big", "medium", "huge"]
_QUESTIONS = [
    "What shape is in the image?",
    "What colour is the {shape}?",
    "Where is the {colour} {shape}?",
    "How many shapes are there?",
    "Describe the image in detail.",
    "Is there a {colour} {shape} in the picture?",
    "What is the background colour?",
    "Which shape is the largest?",
    "Please describe what you see.",
    "Can you tell me about this picture?",
]
_ENGLISH = """\
The quick brown fox jumps over the lazy dog while the sun sets behind the hills.
A picture is worth a thousand words, but a good description helps everyone understand it.
Artificial intelligence systems learn patterns from large amounts of data and examples.
She opened the window, looked at the garden and smiled at the flowers growing there.
Scientists measure the temperature of the ocean every morning and write the results down.
Reading books every day improves vocabulary, writing skills and general knowledge.
The train leaves the station at seven o'clock and arrives in the city before noon.
Children were playing football in the park, laughing and shouting with excitement.
Please answer the question carefully, clearly and politely, with helpful details.
Mountains, rivers, forests and deserts cover different parts of the world.
The museum shows paintings, sculptures and photographs from many centuries.
Yesterday it rained heavily, but today the weather is warm, bright and pleasant.
Cooking dinner together is a wonderful way for families to spend an evening.
Computers process information quickly, following instructions written by programmers.
The assistant explains each answer step by step, so the human can follow the reasoning.
Birds build nests in spring, and their songs fill the early morning air.
This photograph shows a busy street with cars, buses, bicycles and people walking.
Good questions lead to interesting conversations and better understanding.
The library is quiet, and students study there for their exams every afternoon.
Water boils at one hundred degrees and freezes at zero degrees on the Celsius scale.
"""


def _conversation_lines(rng: random.Random, count: int) -> list[str]:
    """Chat-template lines about coloured shapes, as the tiny model's data would phrase them."""
    lines = []
    for _ in range(count):
        colour, shape = rng.choice(_COLOURS), rng.choice(_SHAPES)
        question = rng.choice(_QUESTIONS).format(colour=colour, shape=shape)
        answer = f"There is a {rng.choice(_SIZES)} {colour} {shape} {rng.choice(_PLACES)}."
        lines += [f"### Human: {question}", f"### Assistant: {answer}", "###"]
    return lines


def tiny_corpus() -> list[str]:
    """Training lines: the system prompt, chat-template turns, shape/colour talk, generic English."""
    rng = random.Random(0)
    english = _ENGLISH.splitlines()
    numbers = [f"{a} plus {b} is {a + b}." for a in range(10) for b in range(10)]
    return [SYSTEM_PROMPT] * 20 + _conversation_lines(rng, 600) + english * 10 + numbers


def _train(vocab_size: int) -> bytes:
    """Train the BPE model in memory and return the serialized ``tokenizer.model``."""
    # Yi's ids: <unk> 0, <|startoftext|> 1, <|endoftext|> 2, <|im_start|> 6, <|im_end|> 7, <|im_sep|> 8.
    # Ids 3-5 are unused by the chat format; reserving them puts the chat tokens at 6, 7, 8.
    control = [
        "<|reserved_3|>",
        "<|reserved_4|>",
        "<|reserved_5|>",
        "<|im_start|>",
        "<|im_end|>",
        "<|im_sep|>",
    ]
    model = io.BytesIO()
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(tiny_corpus()),
        model_writer=model,
        vocab_size=vocab_size,
        model_type="bpe",
        byte_fallback=True,
        character_coverage=1.0,
        normalization_rule_name="identity",
        add_dummy_prefix=False,
        remove_extra_whitespaces=False,
        split_digits=True,
        num_threads=1,
        unk_id=0,
        bos_id=1,
        eos_id=2,
        pad_id=-1,
        unk_piece="<unk>",
        bos_piece="<|startoftext|>",
        eos_piece="<|endoftext|>",
        control_symbols=control,
        minloglevel=2,
    )
    return model.getvalue()


def train_tiny_tokenizer(out_dir: str | Path, vocab_size: int = 1024) -> None:
    """Write ``tokenizer.model`` (``vocab_size`` pieces) and Yi-style JSON side files to ``out_dir``."""
    if not MIN_VOCAB <= vocab_size <= MAX_VOCAB:
        raise YivlError(f"tiny tokenizer: vocab_size {vocab_size} is outside {MIN_VOCAB}..{MAX_VOCAB}")
    YiTokenizer(_train(vocab_size), dict(YI_ADDED_TOKENS)).save(out_dir)
