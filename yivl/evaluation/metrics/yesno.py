"""Yes/no answer parsers: POPE's and MME's official rules, and a strict word check for counting."""

from __future__ import annotations

import re

from yivl.errors import YivlError

_NON_WORD = re.compile(r"[^\w\s]")


def parse_pope(text: str) -> str:
    """RUCAIBox/POPE ``evaluate.py`` (= LLaVA ``eval_pope.py``): ``"no"`` or ``"yes"``, never unparsed.

    Only the text before the first ``.`` counts; commas are deleted; the text is split on single
    spaces. Any word equal to ``No``, ``not`` or ``no`` gives ``"no"``, anything else ``"yes"``, so
    ``"NO"``, ``"Nope"`` and ``"Not present"`` all parse as yes.
    """
    text = text.split(".")[0].replace(",", "")
    words = text.split(" ")
    return "no" if "No" in words or "not" in words or "no" in words else "yes"


def parse_mme(text: str) -> str:
    """MME ``calculation.py``: ``"yes"``, ``"no"`` or ``"other"`` from the lowercased answer.

    Exactly ``yes``/``no`` is kept; otherwise ``yes`` within the first 4 characters gives yes, else
    ``no`` within them gives no, else other. So ``"Nope"``/``"None"``/``"Not sure"`` are no, and
    ``"There is no dog."`` is other.
    """
    text = text.lower()
    if text in ("yes", "no"):
        return text
    prefix = text[:4]
    if "yes" in prefix:
        return "yes"
    return "no" if "no" in prefix else "other"


def yesno_word(text: str) -> str | None:
    """VLMEvalKit ``YOrN_Extraction`` without its LLM step: ``"yes"`` if the word yes appears and no
    does not, ``"no"`` in the mirror case, None otherwise. Used to count answers the official POPE
    rule had to default to yes.
    """
    words = _NON_WORD.sub(" ", text.lower()).split()
    if ("yes" in words) != ("no" in words):
        return "yes" if "yes" in words else "no"
    return None


def normalize_label(label: str, where: str = "?") -> str:
    """A ground-truth yes/no label, lowercased and stripped; anything else is a record error."""
    value = str(label).strip().lower()
    if value not in ("yes", "no"):
        raise YivlError(
            f"{where}: a yes/no answer must be 'yes' or 'no', got {label!r}; fix the 'answer' field"
        )
    return value
