"""Yi's SentencePiece tokenizer with the behaviour of the original slow ``LlamaTokenizer``.

The release loads ``AutoTokenizer(use_fast=False)`` with ``legacy=True`` and ``add_bos_token=False``:
text is split on the added-token strings (``added_tokens.json``), each of which maps to its id, and
every other segment goes through ``SentencePieceProcessor.encode`` on its own. No BOS/EOS is added.
"""

from __future__ import annotations

import json
import re
from collections import OrderedDict
from collections.abc import Iterable, Iterator
from contextlib import suppress
from pathlib import Path

import sentencepiece as spm

from yivl.errors import YivlError

MODEL_FILE = "tokenizer.model"
ADDED_TOKENS_FILE = "added_tokens.json"
CONFIG_FILE = "tokenizer_config.json"
SPECIAL_TOKENS_MAP_FILE = "special_tokens_map.json"
SIDE_FILES = (ADDED_TOKENS_FILE, CONFIG_FILE, SPECIAL_TOKENS_MAP_FILE)

YI_ADDED_TOKENS: dict[str, int] = {
    "<unk>": 0,
    "<|startoftext|>": 1,
    "<|endoftext|>": 2,
    "<|im_start|>": 6,
    "<|im_end|>": 7,
    "<|im_sep|>": 8,
}
"""``added_tokens.json`` of the Yi-VL release: the strings that tokenize to a single fixed id."""

Span = tuple[int, int]
SPAN_CACHE_SIZE = 8
"""Texts whose ``encode_with_spans`` result is kept (least recently used goes first)."""


class YiTokenizer:
    """SentencePiece tokenizer that reproduces the release's slow LlamaTokenizer (legacy, no BOS/EOS)."""

    unk_token_id = 0
    pad_token_id = 0
    bos_token_id = 1
    eos_token_id = 2

    def __init__(
        self,
        model_proto: bytes,
        added_tokens: dict[str, int] | None = None,
        side_files: dict[str, bytes] | None = None,
    ) -> None:
        """Build from the bytes of ``tokenizer.model``; ``added_tokens`` maps strings to fixed ids."""
        self._model_proto = model_proto
        self._sp = spm.SentencePieceProcessor()
        self._sp.LoadFromSerializedProto(model_proto)
        self.added_tokens = dict(YI_ADDED_TOKENS if added_tokens is None else added_tokens)
        self.special_ids = frozenset(self.added_tokens.values())
        self._id_to_added = {i: s for s, i in self.added_tokens.items()}
        # Longest first, so a token that is a prefix of another never wins the match.
        names = sorted(self.added_tokens, key=len, reverse=True)
        self._split_re = re.compile("|".join(re.escape(n) for n in names)) if names else None
        self._side_files = dict(side_files or {})
        self._span_cache: OrderedDict[str, tuple[tuple[int, ...], tuple[Span, ...]]] = OrderedDict()

    @classmethod
    def from_dir(cls, path: str | Path) -> YiTokenizer:
        """Load ``tokenizer.model`` (and ``added_tokens.json`` if present) from a model directory."""
        path = Path(path)
        model_file = path / MODEL_FILE
        if not model_file.is_file():
            raise YivlError(f"tokenizer not found: {model_file} is missing; pass a Yi-VL model directory")
        side = {name: (path / name).read_bytes() for name in SIDE_FILES if (path / name).is_file()}
        added = _parse_added_tokens(side[ADDED_TOKENS_FILE], path) if ADDED_TOKENS_FILE in side else None
        try:
            tok = cls(model_file.read_bytes(), added, side)
        except (OSError, RuntimeError) as err:
            raise YivlError(f"{model_file} is not a SentencePiece model ({err}); restore the file") from err
        tok._check_ids(path)
        return tok

    def _check_ids(self, path: Path) -> None:
        """Reject an ``added_tokens.json`` whose ids fall outside the SentencePiece vocabulary."""
        bad = {s: i for s, i in self.added_tokens.items() if not 0 <= i < self.vocab_size}
        if bad:
            raise YivlError(
                f"{path / ADDED_TOKENS_FILE} maps {bad} outside the vocabulary of {self.vocab_size}; "
                "fix the file or restore it from the release"
            )

    @property
    def vocab_size(self) -> int:
        """Number of SentencePiece pieces (the added tokens live inside this range)."""
        return self._sp.get_piece_size()

    def _segments(self, text: str) -> Iterator[tuple[int, str, bool]]:
        """Yield ``(start, segment, is_added_token)`` covering ``text`` left to right; no empty segments."""
        pos = 0
        if self._split_re is not None:
            for m in self._split_re.finditer(text):
                if m.start() > pos:
                    yield pos, text[pos : m.start()], False
                yield m.start(), m.group(), True
                pos = m.end()
        if pos < len(text):
            yield pos, text[pos:], False

    def encode(self, text: str) -> list[int]:
        """Token ids of ``text``, equal to the original ``tokenizer(text).input_ids`` (no BOS/EOS)."""
        ids: list[int] = []
        for _, segment, is_added in self._segments(text):
            if is_added:
                ids.append(self.added_tokens[segment])
            else:
                ids.extend(self._sp.encode(segment))
        return ids

    def encode_with_spans(self, text: str) -> tuple[list[int], list[Span]]:
        """Token ids plus each token's character span ``[start, end)`` in ``text``.

        Spans are in Python string (code point) indices, in order, and concatenated they cover ``text``
        exactly. A character that SentencePiece spells with byte-fallback pieces gives its whole span to
        the last byte piece; the leading byte pieces get the empty span ``(start, start)``.
        """
        # The result is a function of ``text`` alone. The chat format encodes the text before the image
        # placeholder on its own, and that chunk (system prompt + "### Human: ") repeats in every sample.
        cache = self._span_cache
        cached = cache.get(text)
        if cached is None:
            cached = cache[text] = self._encode_with_spans(text)
            if len(cache) > SPAN_CACHE_SIZE:
                cache.popitem(last=False)
        else:
            with suppress(KeyError):  # another thread may have evicted it meanwhile
                cache.move_to_end(text)
        return list(cached[0]), list(cached[1])

    def _encode_with_spans(self, text: str) -> tuple[tuple[int, ...], tuple[Span, ...]]:
        ids: list[int] = []
        spans: list[Span] = []
        for start, segment, is_added in self._segments(text):
            if is_added:
                ids.append(self.added_tokens[segment])
                spans.append((start, start + len(segment)))
                continue
            pieces = _byte_spans(self._sp, segment)
            ids.extend(piece_id for piece_id, _, _ in pieces)
            if segment.isascii():  # one byte per character: byte offsets are character offsets
                spans.extend((start + begin, start + end) for _, begin, end in pieces)
            else:
                to_char = _byte_to_char_offsets(segment)
                spans.extend((start + to_char[begin], start + to_char[end]) for _, begin, end in pieces)
        return tuple(ids), tuple(spans)

    def decode(self, ids: Iterable[int], skip_special_tokens: bool = True) -> str:
        """Text of ``ids``; added tokens are dropped (or written out when ``skip_special_tokens=False``).

        Unlike ``LlamaTokenizer.decode`` the leading space of the first piece is kept, so ``decode``
        inverts ``encode`` and streamed deltas add up to the full text. Negative ids (image slots,
        ignored labels) and ids beyond the vocabulary (padded embedding rows) have no text.
        """
        ids = [int(x) for x in ids]
        vocab, special = self.vocab_size, self.special_ids
        if all(0 <= i < vocab and i not in special for i in ids):  # the usual case: one run of pieces
            return self._sp.decode(ids)
        out: list[str] = []
        run: list[int] = []
        for i in ids:
            if i < 0 or i >= vocab:
                continue
            if i in special:
                out.append(self._sp.decode(run))
                run = []
                if not skip_special_tokens:
                    out.append(self._id_to_added[i])
            else:
                run.append(i)
        out.append(self._sp.decode(run))
        return "".join(out)

    def token_bytes(self, token: int) -> bytes:
        """The bytes one token stands for: a byte-fallback piece (``<0xE4>``) is that byte, not U+FFFD."""
        if 0 <= token < self.vocab_size and token not in self.special_ids and self._sp.IsByte(token):
            return bytes([int(self._sp.IdToPiece(token)[3:5], 16)])
        return self.decode([token]).encode()

    def save(self, out_dir: str | Path) -> None:
        """Write ``tokenizer.model`` and the three JSON side files (the loaded ones, else release-style)."""
        out_dir = Path(out_dir)
        out_dir.mkdir(parents=True, exist_ok=True)
        (out_dir / MODEL_FILE).write_bytes(self._model_proto)
        defaults = release_side_files(self.added_tokens)
        for name in SIDE_FILES:
            data = self._side_files.get(name, defaults[name].encode("utf-8"))
            (out_dir / name).write_bytes(data)


def _parse_added_tokens(data: bytes, path: Path) -> dict[str, int]:
    """Parse ``added_tokens.json`` into ``{string: id}``; YivlError naming the file when malformed."""
    try:
        added = json.loads(data)
    except ValueError as err:
        raise YivlError(f"{path / ADDED_TOKENS_FILE} is not valid JSON ({err}); fix or remove it") from err
    if not isinstance(added, dict) or not all(
        isinstance(k, str) and k and isinstance(v, int) for k, v in added.items()
    ):
        raise YivlError(f"{path / ADDED_TOKENS_FILE} must map token strings to integer ids; fix or remove it")
    return added


def _byte_spans(sp: spm.SentencePieceProcessor, text: str) -> list[tuple[int, int, int]]:
    """``(id, begin, end)`` per piece, begin/end being UTF-8 byte offsets into ``text``."""
    try:  # sentencepiece >= 0.2.2
        mapping = sp.encode(text, return_type="offset_mapping", return_bytes=True)
    except TypeError:  # sentencepiece 0.2.0 / 0.2.1
        proto = sp.encode(text, out_type="immutable_proto")
        return [(p.id, p.begin, p.end) for p in proto.pieces]
    return [(i, begin, end) for i, (begin, end) in zip(mapping["ids"], mapping["offsets"], strict=True)]


def _byte_to_char_offsets(text: str) -> dict[int, int]:
    """Map every UTF-8 byte offset that starts (or ends) a character of ``text`` to its char index."""
    ends = [0]
    for ch in text:
        ends.append(ends[-1] + len(ch.encode("utf-8")))
    return {byte: char for char, byte in enumerate(ends)}


def release_side_files(added_tokens: dict[str, int], model_max_length: int = 4096) -> dict[str, str]:
    """JSON texts of ``tokenizer_config.json``, ``special_tokens_map.json`` and ``added_tokens.json``.

    They describe a slow ``LlamaTokenizer`` with Yi's settings (no BOS/EOS added, legacy, pad = unk),
    so the original VL code and transformers load the directory as they load the release.
    """
    decoder = {
        str(i): {
            "content": s,
            "lstrip": False,
            "normalized": False,
            "rstrip": False,
            "single_word": False,
            "special": True,
        }
        for s, i in sorted(added_tokens.items(), key=lambda kv: kv[1])
    }
    config = {
        "add_bos_token": False,
        "add_eos_token": False,
        "added_tokens_decoder": decoder,
        "bos_token": "<|startoftext|>",
        "clean_up_tokenization_spaces": False,
        "eos_token": "<|endoftext|>",
        "legacy": True,
        "model_max_length": model_max_length,
        "pad_token": "<unk>",
        "padding_side": "right",
        "sp_model_kwargs": {},
        "spaces_between_special_tokens": False,
        "tokenizer_class": "LlamaTokenizer",
        "unk_token": "<unk>",
        "use_default_system_prompt": False,
    }
    special_map = {
        "bos_token": "<|startoftext|>",
        "eos_token": "<|endoftext|>",
        "pad_token": "<unk>",
        "unk_token": "<unk>",
    }
    return {
        CONFIG_FILE: json.dumps(config, indent=2, ensure_ascii=False) + "\n",
        SPECIAL_TOKENS_MAP_FILE: json.dumps(special_map, indent=2) + "\n",
        ADDED_TOKENS_FILE: json.dumps(added_tokens, ensure_ascii=False) + "\n",
    }
