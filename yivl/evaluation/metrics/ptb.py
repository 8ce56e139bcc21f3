"""Caption preprocessing like pycocoevalcap's ``PTBTokenizer``, in Python (no Java).

pycocoevalcap runs Stanford CoreNLP 3.4.1's PTBTokenizer (``-preserveLines -lowerCase``) and then
drops the tokens in ``PTB_PUNCTUATION``. This module reproduces that output for caption-like
English: punctuation split off and dropped, clitics split (``dog's`` -> ``dog 's``, ``don't`` ->
``do n't``), brackets kept as ``-lrb-``/``-rrb-``/... (the filter lists them in upper case, so after
``-lowerCase`` they survive: a pycocoevalcap quirk we keep), ``$``/``%``/``#``/``*`` split off,
abbreviations (``mr.``, ``u.s.``, ``e.g.``) keep their period. Rare PTB rules (``y'all`` ->
``y' all``, ``rock'n'roll``) are not reproduced; ``ptb_tokenize_java`` runs the real jar when Java
and the jar are at hand.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import tempfile
from collections.abc import Sequence
from pathlib import Path

from yivl.errors import YivlError

PTB_PUNCTUATION = frozenset(
    ["''", "'", "``", "`", "-LRB-", "-RRB-", "-LCB-", "-RCB-", ".", "?", "!", ",", ":", "-", "--", "...", ";"]
)
_CHAR_MAP = str.maketrans(
    {"“": '"', "”": '"', "„": '"', "‘": "'", "’": "'", "—": " -- ", "–": " -- ", "…": " ... ", "\u00a0": " "}
)
_BRACKETS = {"(": "-lrb-", ")": "-rrb-", "[": "-lsb-", "]": "-rsb-", "{": "-lcb-", "}": "-rcb-"}
_ABBREVIATIONS = frozenset({
    "mr", "mrs", "ms", "messrs", "dr", "drs", "prof", "st", "ste", "mt", "ave", "blvd", "rd", "jr",
    "sr", "esq", "gen", "sen", "rep", "gov", "lt", "col", "capt", "sgt", "maj", "rev", "hon", "pres",
    "adm", "inc", "ltd", "co", "cos", "corp", "bros", "dept", "univ", "assn", "plc", "etc", "vs",
    "ph.d", "jan", "feb", "mar", "apr", "jun", "jul", "aug", "sep", "sept", "oct", "nov", "dec", "mon",
    "tue", "tues", "wed", "thu", "thurs", "fri", "ft",
})  # fmt: skip
"""Words that keep their period (PTBLexer's title/company/month/day abbreviations, a subset)."""
_BEFORE_NUMBER = frozenset({"no", "nos", "fig", "figs", "ca", "art", "pp", "op"})
"""Abbreviations that keep their period only before a number (``No. 5``; but ``says no.``)."""
_SPECIAL_WORDS = {
    "cannot": ["can", "not"], "gonna": ["gon", "na"], "gotta": ["got", "ta"], "wanna": ["wan", "na"],
    "lemme": ["lem", "me"], "gimme": ["gim", "me"], "'tis": ["'t", "is"], "'twas": ["'t", "was"],
}  # fmt: skip
_CLITICS = ("'s", "'m", "'d", "'re", "'ve", "'ll")
_KEEP_LEADING_QUOTE = re.compile(r"'(?:t(?:is|was)\b|em\b|n'|\d0s\b|(?:s|m|d|re|ve|ll)$)", re.IGNORECASE)
_TIME_SUFFIX = re.compile(r"(\d{1,2}:\d{2})([a-z]+)", re.IGNORECASE)
_ACRONYM = re.compile(r"(?:[a-z]\.)+[a-z]", re.IGNORECASE)
_DOTS = re.compile(r"\.\.+")
_WORD_COMMA = re.compile(r"(?<!\d),|,(?!\d)")


def ptb_tokenize(text: str) -> str:
    """One caption tokenized and filtered as pycocoevalcap does: lowercase tokens joined by spaces."""
    text = text.replace("&amp;", "&").translate(_CHAR_MAP).replace("--", " -- ")
    text = _DOTS.sub(" ... ", text)
    chunks = _WORD_COMMA.sub(" , ", text).split()
    tokens: list[str] = []
    for i, chunk in enumerate(chunks):
        following = chunks[i + 1] if i + 1 < len(chunks) else None
        tokens.extend(_split_chunk(chunk, following))
    return " ".join(t.lower() for t in tokens if t.lower() not in PTB_PUNCTUATION)


def _split_chunk(chunk: str, following: str | None) -> list[str]:
    """Tokens of one whitespace-separated chunk: leading marks, the word's pieces, trailing marks."""
    front, chunk = _peel_front(chunk)
    back: list[str] = []
    while chunk:
        chunk, mark = _peel_back_once(chunk, following)
        if mark is None:
            break
        back.insert(0, mark)
    return front + _split_word(chunk) + back


def _peel_front(chunk: str) -> tuple[list[str], str]:
    """Split opening quotes, brackets, ``$``, ``*`` and a ``#`` before a digit off the chunk's start."""
    front = []
    while chunk:
        head = chunk[0]
        if head in '"`' or (head == "'" and not _KEEP_LEADING_QUOTE.match(chunk)):
            front.append("`")
        elif head in "([{":
            front.append(_BRACKETS[head])
        elif head in "$*" or (head == "#" and chunk[1:2].isdigit()):
            front.append(head)
        else:
            break
        chunk = chunk[1:]
    return front, chunk


def _peel_back_once(chunk: str, following: str | None) -> tuple[str, str | None]:
    """Split one closing mark off the chunk's end: (rest, mark), or (chunk, None) when none applies."""
    tail = chunk[-1]
    if tail in "\"'":
        return chunk[:-1], "''"
    if tail in ")]}":
        return chunk[:-1], _BRACKETS[tail]
    if tail in ",;:%*$":
        return chunk[:-1], tail
    if tail in "?!":
        rest = chunk.rstrip("?!")
        return rest, chunk[len(rest) :]
    if tail == ".":
        rest = chunk.rstrip(".")
        if len(chunk) - len(rest) > 1:
            return rest, "..."
        if rest and _keeps_period(rest, following):
            return chunk, None
        return rest, "."
    return chunk, None


def _keeps_period(word: str, following: str | None) -> bool:
    """Whether ``word + "."`` stays one token (an abbreviation) rather than word and a period."""
    if _ACRONYM.fullmatch(word):
        return True
    if len(word) == 1 and word.isalpha():
        return not (word.isupper() and following is None)
    lower = word.lower()
    if lower in _BEFORE_NUMBER:
        return following is not None and following[:1].isdigit()
    return lower in _ABBREVIATIONS


def _split_word(word: str) -> list[str]:
    """Clitics and fused forms: ``can't`` -> ``ca n't``, ``he's`` -> ``he 's``, ``gonna`` -> ``gon na``."""
    if not word:
        return []
    if word.lower() in _SPECIAL_WORDS:
        return list(_SPECIAL_WORDS[word.lower()])
    time = _TIME_SUFFIX.fullmatch(word)
    if time:
        return [time.group(1), time.group(2)]
    lower = word.lower()
    for clitic in _CLITICS:
        if lower.endswith(clitic) and len(word) > len(clitic):
            return [*_split_word(word[: -len(clitic)]), word[-len(clitic) :]]
    if lower.endswith("n't") and len(word) > 3:
        return [*_split_word(word[:-3]), word[-3:]]
    return [word]


def ptb_tokenize_java(texts: Sequence[str], jar: str | Path) -> list[str]:
    """The real pycocoevalcap pipeline: Stanford PTBTokenizer (Java) + the punctuation filter.

    ``jar`` is ``stanford-corenlp-3.4.1.jar`` (shipped inside the pycocoevalcap package). Needs a
    ``java`` on PATH; raises YivlError when either is missing.
    """
    jar = Path(jar)
    if shutil.which("java") is None:
        raise YivlError("java is not on PATH; install a JRE or use the Python tokenizer (tokenizer=python)")
    if not jar.is_file():
        raise YivlError(f"{jar}: PTB tokenizer jar not found; point to stanford-corenlp-3.4.1.jar")
    with tempfile.NamedTemporaryFile("w", suffix=".txt", encoding="utf-8", delete=False) as handle:
        handle.write("\n".join(t.replace("\n", " ") for t in texts))
    try:
        cmd = [
            "java",
            "-cp",
            str(jar),
            "edu.stanford.nlp.process.PTBTokenizer",
            "-preserveLines",
            "-lowerCase",
        ]
        out = subprocess.run(
            [*cmd, handle.name], capture_output=True, check=True, text=True, encoding="utf-8"
        )
    finally:
        Path(handle.name).unlink()
    lines = out.stdout.split("\n")
    if len(lines) < len(texts):
        raise RuntimeError(f"PTBTokenizer returned {len(lines)} lines for {len(texts)} captions")
    return [
        " ".join(w for w in line.rstrip().split(" ") if w not in PTB_PUNCTUATION)
        for line in lines[: len(texts)]
    ]
