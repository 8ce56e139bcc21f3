"""Stop strings and streamed deltas, without a model."""

from __future__ import annotations

from yivl.models.text_stream import TextStream, find_stop, partial_stop_length, visible_text

STOPS = ("###",)


def test_find_stop_takes_the_earliest() -> None:
    assert find_stop("a ## b ### c ###", STOPS) == 7
    assert find_stop("a <|im_end|> ###", ("###", "<|im_end|>")) == 2
    assert find_stop("no stop", STOPS) is None


def test_partial_stop_length() -> None:
    assert [partial_stop_length(t, STOPS) for t in ("a", "a#", "a##", "a#b", "")] == [0, 1, 2, 0, 0]


def test_visible_text_holds_back_what_may_change() -> None:
    assert visible_text(" The cat ##", STOPS, final=False) == "The cat"
    assert visible_text(" The cat ##", STOPS, final=True) == "The cat ##"
    assert visible_text(" The cat\n###Human", STOPS, final=False) == "The cat"
    assert visible_text("caf\ufffd", STOPS, final=False) == "caf"


def _replay(texts: list[str]) -> tuple[str, list[str]]:
    deltas: list[str] = []
    stream = TextStream(3, STOPS, lambda i, d: deltas.append(d) if i == 3 else None)
    for text in texts:
        if stream.update(text):
            break
    return stream.finish(), deltas


def test_deltas_concatenate_to_the_answer_ending_at_a_stop() -> None:
    texts = [
        " The",
        " The cat",
        " The cat\n",
        " The cat\n#",
        " The cat\n##",
        " The cat\n###",
        " The cat\n### x",
    ]
    answer, deltas = _replay(texts)
    assert answer == "The cat"
    assert deltas == ["The", " cat"]


def test_a_partial_stop_that_is_not_a_stop_is_released() -> None:
    answer, deltas = _replay([" 1", " 1 #", " 1 ## 2", " 1 ## 2 "])
    assert answer == "1 ## 2"
    assert deltas == ["1", " ## 2"]
    assert "".join(deltas) == answer
