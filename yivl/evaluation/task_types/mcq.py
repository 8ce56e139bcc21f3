"""``mcq``: lettered options, scored from the generated letter (optionally CircularEval, or the official
MMMU parser and prompt style) and/or by the likelihood of each option."""

from __future__ import annotations

import string
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from yivl.data.chat import expanded_length
from yivl.data.tokenizer import YiTokenizer
from yivl.errors import YivlError
from yivl.evaluation.items import Item, base_item, question_text, with_suffix
from yivl.evaluation.likelihood import continuation_sequence
from yivl.evaluation.metrics import (
    TaskMetrics,
    choice_letters,
    eval_mmmu_open,
    extract_choice,
    parse_mmmu_choice,
    parse_mmmu_open,
    pick_by_likelihood,
    summarize_mcq,
)
from yivl.evaluation.metrics.summary import mean_metric
from yivl.evaluation.prompting import Prepared, render_question
from yivl.evaluation.sources import RawRecord
from yivl.evaluation.task_types.base import GenerationOptions, Records, TaskType, choice, group_labels
from yivl.evaluation.task_types.vqa import SHORT_ANSWER

MCQ_MODES = ("generate", "likelihood", "both")
MCQ_PARSERS = ("default", "mmmu")
LIKELIHOOD_TARGETS = ("text", "letter")
MMMU_OPEN_SUFFIX = "\nAnswer the question using a single word or phrase."


@dataclass(frozen=True)
class McqOptions(GenerationOptions):
    mode: str = choice("generate", *MCQ_MODES)
    parser: str = choice("default", *MCQ_PARSERS)
    circular: bool = False
    likelihood_target: str = choice("text", *LIKELIHOOD_TARGETS)
    suffix: str = "\nAnswer with the option's letter from the given choices directly."
    cloze_suffix: str = SHORT_ANSWER


class McqType(TaskType):
    name = "mcq"
    Options = McqOptions
    display = ("circular_accuracy", "accuracy", "accuracy_without_guesses", "acc_sum", "acc_mean")
    parsed_metrics = ("circular_accuracy", "accuracy", "accuracy_without_guesses")
    percent = True

    def generates(self, options: Mapping[str, Any]) -> bool:
        """Generate and both modes generate; likelihood mode only scores."""
        return options.get("mode", "generate") != "likelihood"

    def scores_likelihood(self, options: Mapping[str, Any]) -> bool:
        return options.get("mode", "generate") != "generate"

    def build_item(self, record: RawRecord, options: Mapping[str, Any]) -> Item:
        item = base_item(record)
        if options.get("parser") == "mmmu" and record.data.get("question_type") == "open":
            if options.get("mode") != "generate":
                raise YivlError(
                    f"{record.where}: an open MMMU question has no options to score; use mode=generate"
                )
            return _mmmu_open(record, item)
        choices = record.data.get("choices", record.data.get("options"))
        if not isinstance(choices, list) or not all(isinstance(c, str | int | float) for c in choices):
            raise YivlError(f"{record.where}: an mcq record needs a 'choices' list of option texts")
        choices = [str(c) for c in choices]
        letters = choice_letters(len(choices))
        item.target = _answer_letter(record, choices, letters)
        item.meta["choices"] = choices
        question = question_text(record, "mcq")
        item.question = mcq_prompt(question, choices, record.data.get("hint"), options)
        if options.get("likelihood_target") == "letter":
            item.cloze, item.continuations = item.question, list(letters)
        else:
            item.cloze, item.continuations = with_suffix(question, options.get("cloze_suffix")), choices
        return item

    def prepare(
        self, item: Item, options: Mapping[str, Any], tokenizer: YiTokenizer, image_tokens: int
    ) -> Prepared:
        """The generation prompt, and/or each option scored as ``" " + option`` after the cloze prompt
        (tokenised jointly with it)."""
        out = super().prepare(item, options, tokenizer, image_tokens)
        if self.scores_likelihood(options):
            assert item.cloze is not None and item.continuations is not None
            out.cloze_prompt = render_question(item.cloze, item.image is not None)
            out.sequences = [
                continuation_sequence(tokenizer, out.cloze_prompt, c) for c in item.continuations
            ]
            longest = max(expanded_length(ids, image_tokens) for ids, _ in out.sequences)
            out.length = max(out.length, longest)
        return out

    def score_output(self, item: Item, output: str, options: Mapping[str, Any], seed: int) -> dict[str, Any]:
        if item.meta.get("open"):
            predictions = parse_mmmu_open(output)
            return {
                "parsed": predictions,
                "correct": eval_mmmu_open(item.target, predictions),
                "unparsed": False,
            }
        choices = item.meta["choices"]
        if options["parser"] == "mmmu":
            index2ans = dict(zip(choice_letters(len(choices)), choices, strict=True))
            letter, guessed = parse_mmmu_choice(output, index2ans, question_id=item.id, seed=seed)
            return {
                "parsed": letter,
                "correct": letter == item.target,
                "unparsed": guessed,
                "guessed": guessed,
            }
        letter = extract_choice(output, choices)
        return {"parsed": letter, "correct": letter == item.target, "unparsed": letter is None}

    def score_sequences(
        self, item: Item, sums: Sequence[float], counts: Sequence[int], options: Mapping[str, Any]
    ) -> dict[str, Any]:
        """Per-option log-prob sums and token counts, and the picks by sum and by mean."""
        letters = choice_letters(len(sums))
        by_sum, by_mean = pick_by_likelihood(sums, counts)
        return {
            "ll_sum": [round(float(s), 6) for s in sums],
            "ll_tokens": list(counts),
            "pick_sum": letters[by_sum],
            "pick_mean": letters[by_mean],
            "correct_sum": letters[by_sum] == item.target,
            "correct_mean": letters[by_mean] == item.target,
        }

    def summarize(self, records: Records, options: Mapping[str, Any], iters: int, seed: int) -> TaskMetrics:
        """Generation accuracy (CircularEval and MMMU guesses optional) and/or likelihood accuracies."""
        categories = group_labels(records, "category")
        result: TaskMetrics | None = None
        if self.generates(options):
            groups = [str(r.get("pair_id", r["id"])) for r in records] if options["circular"] else None
            correct = [bool(r["correct"]) for r in records]
            result = summarize_mcq(correct, [bool(r["unparsed"]) for r in records], categories, groups)
            if options["parser"] == "mmmu":
                guessed = [bool(r.get("guessed")) for r in records]
                plain = [c and not g for c, g in zip(correct, guessed, strict=True)]
                _add_mean(result, "accuracy_without_guesses", plain)
                result.notes["n_guessed"] = sum(guessed)
        if self.scores_likelihood(options):
            if result is None:
                result = TaskMetrics(main="acc_sum", values={}, n=len(records))
            _add_mean(result, "acc_sum", [bool(r["correct_sum"]) for r in records])
            _add_mean(result, "acc_mean", [bool(r["correct_mean"]) for r in records])
        assert result is not None
        return result

    def chance(self, records: Records) -> Mapping[str, float]:
        """100/K averaged over the records with options."""
        options = [len(r["choices"]) for r in records if r.get("choices")]
        if not options:
            return {}
        level = 100.0 * sum(1 / k for k in options) / len(records)
        return dict.fromkeys(("accuracy", "acc_sum", "acc_mean"), level)

    def parsers(self, options: Mapping[str, Any]) -> dict[str, str]:
        return {
            "mcq_parser": options["parser"],
            "mcq_fallback": "seeded guess, reported" if options["parser"] == "mmmu" else "none",
        }


def _add_mean(result: TaskMetrics, name: str, flags: Sequence[bool]) -> None:
    value, err = mean_metric(name, [float(f) for f in flags])
    result.values[name], result.stderr[name] = value, err


def _mmmu_open(record: RawRecord, item: Item) -> Item:
    answer = record.data.get("answer")
    golds = answer if isinstance(answer, list) else [answer]
    if not golds or not all(isinstance(g, str | int | float) for g in golds):
        raise YivlError(f"{record.where}: an open MMMU record needs an 'answer' (a string or a list)")
    item.question = with_suffix(question_text(record, "mcq") + "\n", MMMU_OPEN_SUFFIX)
    item.target = [str(g) for g in golds]
    item.meta["open"] = True
    return item


def _answer_letter(record: RawRecord, choices: list[str], letters: list[str]) -> str:
    """The gold option as a letter: given as a letter, a 0-based index, or the option's exact text."""
    answer = record.data.get("answer")
    if isinstance(answer, int) and not isinstance(answer, bool) and 0 <= answer < len(choices):
        return letters[answer]
    if isinstance(answer, str):
        text = answer.strip()
        if text.upper() in letters and len(text) == 1:
            return text.upper()
        if text in choices:
            return letters[choices.index(text)]
    raise YivlError(
        f"{record.where}: mcq 'answer' {answer!r} is not one of the letters {''.join(letters)}, an option "
        "index or an option's text"
    )


def mcq_prompt(question: str, choices: list[str], hint: Any, options: Mapping[str, Any]) -> str:
    """LLaVA-1.5 style (``A. x`` lines) or, with ``parser=mmmu``, the official MMMU style (``(A) x``)."""
    letters = string.ascii_uppercase
    context = f"Context: {hint}\n" if isinstance(hint, str) and hint.strip() else ""
    if options.get("parser") == "mmmu":
        lines = "\n".join(f"({letters[i]}) {c}" for i, c in enumerate(choices))
        return with_suffix(f"{context}{question}\n\n{lines}\n", options.get("suffix"))
    lines = "\n".join(f"{letters[i]}. {c}" for i, c in enumerate(choices))
    return with_suffix(f"{context}{question}\n{lines}", options.get("suffix"))


TYPE = McqType()
