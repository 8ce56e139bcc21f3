"""YiTokenizer: Yi's special ids, slow-LlamaTokenizer encoding, character spans, tiny tokenizer files."""

from __future__ import annotations

import itertools
import json
from pathlib import Path

import pytest

from yivl.checkpoint.tiny_tokenizer import train_tiny_tokenizer
from yivl.data.chat import SYSTEM_PROMPT
from yivl.data.tokenizer import YI_ADDED_TOKENS, YiTokenizer
from yivl.errors import YivlError

CHINESE_OUTSIDE_CORPUS = "猫在桌子上睡觉"  # none of these characters is in the tiny corpus: byte fallback
TEXTS = [
    "###",
    " Human",
    " Assistant",
    "\n",
    SYSTEM_PROMPT,
    f"{SYSTEM_PROMPT}\n\n### Human: \nWhat colour is the circle?\n### Assistant: It is red.\n###",
    f" {CHINESE_OUTSIDE_CORPUS}。\n###",
    "emoji 😀 and é, tabs\tand  double  spaces ",
    "x<|im_start|>y<|im_end|>\n<|endoftext|><unk> tail",
]


def _is_byte_piece(tokenizer: YiTokenizer, token_id: int) -> bool:
    return tokenizer._sp.is_byte(token_id)


def test_special_token_ids_match_yi(tokenizer: YiTokenizer) -> None:
    assert tokenizer.vocab_size == 1024
    assert tokenizer.special_ids == frozenset({0, 1, 2, 6, 7, 8})
    for text, token_id in YI_ADDED_TOKENS.items():
        assert tokenizer.encode(text) == [token_id]
        assert tokenizer._sp.id_to_piece(token_id) == text
    assert (tokenizer.unk_token_id, tokenizer.bos_token_id, tokenizer.eos_token_id) == (0, 1, 2)


def test_training_is_deterministic(tmp_path: Path, tiny_tokenizer_dir: Path) -> None:
    train_tiny_tokenizer(tmp_path)
    for name in ("tokenizer.model", "tokenizer_config.json", "special_tokens_map.json", "added_tokens.json"):
        assert (tmp_path / name).read_bytes() == (tiny_tokenizer_dir / name).read_bytes(), name


def test_tiny_tokenizer_rejects_unreachable_vocab_sizes(tmp_path: Path) -> None:
    with pytest.raises(YivlError, match="vocab_size 100 is outside"):
        train_tiny_tokenizer(tmp_path, vocab_size=100)


@pytest.mark.parametrize("text", TEXTS)
def test_encode_decode_round_trip(tokenizer: YiTokenizer, text: str) -> None:
    ids = tokenizer.encode(text)
    assert tokenizer.decode(ids, skip_special_tokens=False) == text
    assert tokenizer.bos_token_id not in ids or "<|startoftext|>" in text


def test_chat_markers_are_single_pieces_and_newline_is_a_byte(tokenizer: YiTokenizer) -> None:
    assert len(tokenizer.encode("###")) == 1
    assert len(tokenizer.encode(" Human")) == 1
    assert len(tokenizer.encode(" Assistant")) == 1
    (newline,) = tokenizer.encode("\n")
    assert tokenizer._sp.id_to_piece(newline) == "<0x0A>"


def test_chinese_outside_corpus_uses_byte_fallback(tokenizer: YiTokenizer) -> None:
    ids = tokenizer.encode(CHINESE_OUTSIDE_CORPUS)
    assert all(_is_byte_piece(tokenizer, i) for i in ids)
    assert len(ids) == 3 * len(CHINESE_OUTSIDE_CORPUS)
    assert tokenizer.decode(ids) == CHINESE_OUTSIDE_CORPUS


def test_no_bos_and_no_dummy_prefix(tokenizer: YiTokenizer) -> None:
    # The chunk after the image placeholder starts with "\n": it must not gain a leading space piece.
    ids = tokenizer.encode("\nWhat is it?")
    assert ids[0] == tokenizer.encode("\n")[0]
    assert tokenizer.decode(ids) == "\nWhat is it?"


def test_added_tokens_split_the_text(tokenizer: YiTokenizer) -> None:
    assert tokenizer.encode("red<|im_end|> blue") == [*tokenizer.encode("red"), 7, *tokenizer.encode(" blue")]


@pytest.mark.parametrize("text", TEXTS)
def test_encode_matches_transformers_sentencepiece_legacy(
    tokenizer: YiTokenizer, tiny_tokenizer_dir: Path, text: str
) -> None:
    # transformers' SentencePiece backend with legacy=True is the slow LlamaTokenizer the release used.
    backend = pytest.importorskip("transformers.tokenization_utils_sentencepiece")
    reference = backend.SentencePieceBackend(
        vocab_file=str(tiny_tokenizer_dir / "tokenizer.model"),
        legacy=True,
        unk_token="<unk>",
        bos_token="<|startoftext|>",
        eos_token="<|endoftext|>",
        pad_token="<unk>",
        extra_special_tokens=["<|im_start|>", "<|im_end|>", "<|im_sep|>"],
    )
    assert tokenizer.encode(text) == reference(text, add_special_tokens=False).input_ids


@pytest.mark.parametrize("text", TEXTS)
def test_spans_are_character_offsets_that_cover_the_text(tokenizer: YiTokenizer, text: str) -> None:
    ids, spans = tokenizer.encode_with_spans(text)
    assert ids == tokenizer.encode(text)
    assert len(spans) == len(ids)
    assert spans[0][0] == 0 and spans[-1][1] == len(text)
    assert all(prev[1] == cur[0] for prev, cur in itertools.pairwise(spans))
    assert "".join(text[s:e] for s, e in spans) == text
    # Each run of tokens up to a non-empty span decodes to exactly that span's characters.
    group: list[int] = []
    for token_id, (start, end) in zip(ids, spans, strict=True):
        group.append(token_id)
        if end > start:
            assert tokenizer.decode(group, skip_special_tokens=False) == text[start:end]
            group = []
    assert not group


def test_spans_equal_sentencepiece_character_offsets(tokenizer: YiTokenizer) -> None:
    # sentencepiece >= 0.2.2 can report character offsets itself: an independent check of the conversion.
    text = f"人类 red {CHINESE_OUTSIDE_CORPUS} 😀 blue\n###"
    try:
        expected = tokenizer._sp.encode(text, return_type="offset_mapping")["offsets"]
    except TypeError:
        pytest.skip("this sentencepiece has no offset_mapping")
    assert tokenizer.encode_with_spans(text)[1] == [tuple(span) for span in expected]


def test_spans_are_not_byte_offsets(tokenizer: YiTokenizer) -> None:
    text = f"人类 red {CHINESE_OUTSIDE_CORPUS} blue"
    _ids, spans = tokenizer.encode_with_spans(text)
    (blue,) = [i for i, (s, e) in enumerate(spans) if text[s:e] == " blue"]
    assert spans[blue] == (len(text) - 5, len(text))
    empty = [s for s, e in spans if s == e]
    assert len(empty) == 2 * len(CHINESE_OUTSIDE_CORPUS)  # two leading byte pieces per 3-byte character


def test_decode_skips_special_and_negative_ids(tokenizer: YiTokenizer) -> None:
    ids = [*tokenizer.encode("red"), 2, -200, -100, *tokenizer.encode(" blue")]
    assert tokenizer.decode(ids) == "red blue"
    assert tokenizer.decode(ids, skip_special_tokens=False) == "red<|endoftext|> blue"


def test_save_writes_release_style_files(tokenizer: YiTokenizer, tmp_path: Path) -> None:
    tokenizer.save(tmp_path)
    config = json.loads((tmp_path / "tokenizer_config.json").read_text())
    assert config["tokenizer_class"] == "LlamaTokenizer"
    assert (config["add_bos_token"], config["add_eos_token"], config["legacy"]) == (False, False, True)
    assert config["model_max_length"] == 4096
    assert json.loads((tmp_path / "added_tokens.json").read_text()) == YI_ADDED_TOKENS
    special = json.loads((tmp_path / "special_tokens_map.json").read_text())
    assert special == {
        "bos_token": "<|startoftext|>",
        "eos_token": "<|endoftext|>",
        "pad_token": "<unk>",
        "unk_token": "<unk>",
    }
    again = YiTokenizer.from_dir(tmp_path)
    assert again.encode(SYSTEM_PROMPT) == tokenizer.encode(SYSTEM_PROMPT)


def test_save_keeps_loaded_side_files(tiny_tokenizer_dir: Path, tmp_path: Path) -> None:
    source = tmp_path / "src"
    source.mkdir()
    for path in tiny_tokenizer_dir.iterdir():
        (source / path.name).write_bytes(path.read_bytes())
    custom = b'{"model_max_length": 8192, "tokenizer_class": "LlamaTokenizer"}\n'
    (source / "tokenizer_config.json").write_bytes(custom)
    YiTokenizer.from_dir(source).save(tmp_path / "out")
    assert (tmp_path / "out" / "tokenizer_config.json").read_bytes() == custom


def test_missing_tokenizer_is_a_one_line_error(tmp_path: Path) -> None:
    with pytest.raises(YivlError, match=r"tokenizer\.model is missing") as err:
        YiTokenizer.from_dir(tmp_path)
    assert str(tmp_path) in str(err.value) and "\n" not in str(err.value)


def test_corrupt_tokenizer_files_are_errors(tiny_tokenizer_dir: Path, tmp_path: Path) -> None:
    (tmp_path / "tokenizer.model").write_bytes(b"not a model")
    with pytest.raises(YivlError, match="not a SentencePiece model"):
        YiTokenizer.from_dir(tmp_path)
    (tmp_path / "tokenizer.model").write_bytes((tiny_tokenizer_dir / "tokenizer.model").read_bytes())
    (tmp_path / "added_tokens.json").write_text("{broken")
    with pytest.raises(YivlError, match=r"added_tokens\.json is not valid JSON"):
        YiTokenizer.from_dir(tmp_path)
    (tmp_path / "added_tokens.json").write_text('{"<unk>": 0, "<big>": 99999}')
    with pytest.raises(YivlError, match="outside the vocabulary"):
        YiTokenizer.from_dir(tmp_path)
