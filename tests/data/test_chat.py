"""Chat format: exact prompt strings, tokenizer_image_token ids, exact label masks, bad conversations."""

from __future__ import annotations

import hashlib

import pytest

from yivl.constants import IGNORE_INDEX, IMAGE_PLACEHOLDER, IMAGE_TOKEN_INDEX
from yivl.data.chat import (
    SYSTEM_PROMPT,
    ChatFormatError,
    Turn,
    build_training_example,
    normalize_role,
    render_prompt,
    tokenize_prompt,
    turns_from_record,
)
from yivl.data.tokenizer import YiTokenizer

SYSTEM_SHA256 = "164a2196cd2432236af52b9003a9c922e8e95c1f3e7ea1b963356ae90bda9a7e"


def human(text: str) -> Turn:
    return Turn("human", text)


def gpt(text: str) -> Turn:
    return Turn("assistant", text)


def original_tokenizer_image_token(prompt: str, tokenizer: YiTokenizer) -> list[int]:
    """The release's ``tokenizer_image_token`` (VL/llava/mm_utils.py), transcribed."""
    chunks = [tokenizer.encode(chunk) for chunk in prompt.split("<image_placeholder>")]

    def insert_separator(x: list, sep: list) -> list:
        return [ele for sublist in zip(x, [sep] * len(x), strict=True) for ele in sublist][:-1]

    input_ids, offset = [], 0
    if chunks and chunks[0] and chunks[0][0] == tokenizer.bos_token_id:
        offset = 1
        input_ids.append(chunks[0][0])
    for x in insert_separator(chunks, [-200] * (offset + 1)):
        input_ids.extend(x[offset:])
    return input_ids


def supervised_runs(labels: list[int]) -> list[list[int]]:
    """Maximal runs of consecutive supervised labels."""
    runs: list[list[int]] = []
    previous = IGNORE_INDEX
    for label in labels:
        if label != IGNORE_INDEX:
            if previous == IGNORE_INDEX:
                runs.append([])
            runs[-1].append(label)
        previous = label
    return runs


def test_system_prompt_is_exact() -> None:
    assert hashlib.sha256(SYSTEM_PROMPT.encode("utf-8")).hexdigest() == SYSTEM_SHA256
    assert len(SYSTEM_PROMPT) == 303


def test_single_turn_prompt() -> None:
    prompt = render_prompt([human("<image_placeholder>\nWhat is in the picture?")])
    assert prompt == SYSTEM_PROMPT + (
        "\n\n### Human: <image_placeholder>\nWhat is in the picture?\n### Assistant:"
    )


def test_placeholder_is_moved_to_the_front() -> None:
    prompt = render_prompt([human("  Describe the cats. <image_placeholder> ")], system="SYS")
    assert prompt == "SYS\n\n### Human: <image_placeholder>\nDescribe the cats.\n### Assistant:"


def test_multi_turn_prompt() -> None:
    turns = [
        human("<image_placeholder>\nWhat shape is it?"),
        gpt("A red circle."),
        human("Where is it?"),
    ]
    assert render_prompt(turns, system="SYS") == (
        "SYS\n\n### Human: <image_placeholder>\nWhat shape is it?\n### Assistant: A red circle.\n"
        "### Human: Where is it?\n### Assistant:"
    )


def test_text_only_prompt() -> None:
    assert render_prompt([human("Hello?")], system="SYS") == "SYS\n\n### Human: Hello?\n### Assistant:"


def test_tokenize_prompt_equals_chunkwise_encoding(tokenizer: YiTokenizer) -> None:
    prompt = render_prompt([human("<image_placeholder>\nWhat colour is the square?")])
    before, after = prompt.split(IMAGE_PLACEHOLDER)
    ids = tokenize_prompt(tokenizer, prompt)
    assert ids == [*tokenizer.encode(before), IMAGE_TOKEN_INDEX, *tokenizer.encode(after)]
    assert ids == original_tokenizer_image_token(prompt, tokenizer)
    assert ids[0] != tokenizer.bos_token_id and ids.count(IMAGE_TOKEN_INDEX) == 1


def test_tokenize_text_only_prompt(tokenizer: YiTokenizer) -> None:
    prompt = render_prompt([human("Hi there")])
    assert tokenize_prompt(tokenizer, prompt) == tokenizer.encode(prompt)


def test_single_turn_labels(tokenizer: YiTokenizer) -> None:
    reply = "There is a large blue triangle in the center."
    turns = [human("<image_placeholder>\nDescribe the image."), gpt(reply)]
    ex = build_training_example(tokenizer, turns, sample_id="s1")
    assert len(ex.input_ids) == len(ex.labels) and ex.num_images == 1
    (run,) = supervised_runs(ex.labels)
    assert tokenizer.decode(run) == " " + reply + "\n###"
    for token, label in zip(ex.input_ids, ex.labels, strict=True):
        assert label in (token, IGNORE_INDEX)
    assert ex.labels[ex.input_ids.index(IMAGE_TOKEN_INDEX)] == IGNORE_INDEX
    # The unsupervised prefix is exactly the inference tokenization of the prompt.
    prompt_ids = tokenize_prompt(tokenizer, render_prompt(turns[:1]))
    assert ex.input_ids[: len(prompt_ids)] == prompt_ids
    assert set(ex.labels[: len(prompt_ids)]) == {IGNORE_INDEX}
    assert ex.input_ids[len(prompt_ids) :] == run


def test_multi_turn_labels(tokenizer: YiTokenizer) -> None:
    replies = ["A red circle.", "It is in the top left corner.", "Yes, there are two."]
    turns = [
        human("<image_placeholder>\nWhat shape is it?"),
        gpt(replies[0]),
        human("Where is it?"),
        gpt(replies[1]),
        human("Are there more shapes?"),
        gpt(replies[2]),
    ]
    ex = build_training_example(tokenizer, turns, sample_id="multi")
    runs = supervised_runs(ex.labels)
    assert [tokenizer.decode(run) for run in runs] == [f" {r}\n###" for r in replies]
    # Everything else, including " Human: ..." after each "###", is masked.
    supervised = sum(len(r) for r in runs)
    assert ex.labels.count(IGNORE_INDEX) == len(ex.labels) - supervised
    for k in (1, 3, 5):
        prompt_ids = tokenize_prompt(tokenizer, render_prompt(turns[:k]))
        assert ex.input_ids[: len(prompt_ids)] == prompt_ids


def test_chinese_reply_labels(tokenizer: YiTokenizer) -> None:
    reply = "图中有一只猫在桌子上睡觉。"
    turns = [human("<image_placeholder>\n这是什么？"), gpt(reply)]
    ex = build_training_example(tokenizer, turns, sample_id="zh")
    (run,) = supervised_runs(ex.labels)
    assert tokenizer.decode(run) == " " + reply + "\n###"
    assert any(tokenizer._sp.is_byte(i) for i in run)


def test_text_only_sample_has_no_image(tokenizer: YiTokenizer) -> None:
    ex = build_training_example(tokenizer, [human("Say hi."), gpt("Hi!")])
    assert ex.num_images == 0 and IMAGE_TOKEN_INDEX not in ex.input_ids
    (run,) = supervised_runs(ex.labels)
    assert tokenizer.decode(run) == " Hi!\n###"


class MergingTokenizer:
    """A stub whose tokens are single characters, except ``": "`` which it merges into one token."""

    def encode(self, text: str) -> list[int]:
        return self.encode_with_spans(text)[0]

    def encode_with_spans(self, text: str) -> tuple[list[int], list[tuple[int, int]]]:
        spans, i = [], 0
        while i < len(text):
            step = 2 if text.startswith(": ", i) else 1
            spans.append((i, i + step))
            i += step
        return [ord(text[s]) for s, _ in spans], spans


def test_token_across_a_reply_boundary_is_an_error() -> None:
    turns = [human("Q?"), gpt("Answer.")]
    with pytest.raises(ChatFormatError, match=r"sample rec-7: token \d+ ': '") as err:
        build_training_example(MergingTokenizer(), turns, system="S", sample_id="rec-7")
    assert "\n" not in str(err.value)


def test_role_aliases() -> None:
    assert [normalize_role(r, "x") for r in ("human", "USER", " gpt ", "Assistant")] == [
        "human",
        "human",
        "assistant",
        "assistant",
    ]


def test_turns_from_record() -> None:
    record = {
        "id": "a1",
        "image": "a.png",
        "conversations": [
            {"from": "human", "value": "<image_placeholder>\nQ"},
            {"from": "assistant", "value": "A"},
        ],
    }
    assert turns_from_record(record, "rec a1") == [human("<image_placeholder>\nQ"), gpt("A")]


BAD_CONVERSATIONS = {
    "empty question": ([human("<image_placeholder>\n  "), gpt("A")], "empty question"),
    "empty reply": ([human("Q"), gpt("  ")], "empty assistant reply"),
    "two humans": ([human("Q"), human("Q2"), gpt("A")], "two human turns in a row"),
    "two replies": ([human("Q"), gpt("A"), gpt("B")], "two assistant turns in a row"),
    "starts with reply": ([gpt("A"), human("Q"), gpt("B")], "starts with an assistant turn"),
    "placeholder in reply": ([human("Q"), gpt("see <image_placeholder>")], "in an assistant reply"),
    "two images": ([human("<image_placeholder> <image_placeholder> Q"), gpt("A")], "2 image placeholders"),
    "images in two turns": (
        [human("<image_placeholder>\nQ"), gpt("A"), human("<image_placeholder>\nQ2"), gpt("B")],
        "2 image placeholders",
    ),
    "ends with question": ([human("Q"), gpt("A"), human("Q2")], "ends with a question; add its reply"),
    "unknown role": ([Turn("system", "Q"), gpt("A")], "unknown role 'system'"),
    "empty role": ([Turn("", "Q"), gpt("A")], "unknown role ''"),
    "empty": ([], "conversation is empty"),
}


@pytest.mark.parametrize("name", BAD_CONVERSATIONS)
def test_bad_conversations_are_one_line_errors(tokenizer: YiTokenizer, name: str) -> None:
    turns, message = BAD_CONVERSATIONS[name]
    with pytest.raises(ChatFormatError, match=message) as err:
        build_training_example(tokenizer, turns, sample_id="rec-42")
    assert str(err.value).startswith("sample rec-42") and "\n" not in str(err.value)


BAD_RECORDS = {
    "no conversations": ({"image": "a.png"}, "non-empty 'conversations' list"),
    "not a dict": (["human", "Q"], "non-empty 'conversations' list"),
    "empty list": ({"conversations": []}, "non-empty 'conversations' list"),
    "turn without value": ({"conversations": [{"from": "human"}]}, "turn 0: needs 'from' and a string"),
    "unknown role": ({"conversations": [{"from": "bot", "value": "x"}]}, "turn 0: unknown role 'bot'"),
    "missing role": ({"conversations": [{"value": "x"}]}, "turn 0: unknown role None"),
}


@pytest.mark.parametrize("name", BAD_RECORDS)
def test_bad_records_name_the_record(name: str) -> None:
    record, message = BAD_RECORDS[name]
    with pytest.raises(ChatFormatError, match=message) as err:
        turns_from_record(record, "train.json record 3")
    assert str(err.value).startswith("train.json record 3") and "\n" not in str(err.value)


def test_render_prompt_needs_a_final_question() -> None:
    with pytest.raises(ChatFormatError, match="chat: ends with an assistant reply"):
        render_prompt([human("Q"), gpt("A")], where="chat")
    with pytest.raises(ChatFormatError, match="empty question"):
        render_prompt([human("<image_placeholder>")])
