"""What an evaluation task type is: the one class the shared machinery (task entries, runner, summary,
table, chart, training's validation task) calls for everything that differs between types.

A type holds its options (a frozen dataclass whose defaults mirror ``configs/task_options/<name>.yaml``),
how a record becomes an item, the item's prompt and scored sequences, the fields a model output adds to
its sample record, the task's metrics from its records, and how the metrics are shown. Metric math
stays in ``yivl.evaluation.metrics``.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field, fields
from typing import Any, ClassVar

from yivl.data.chat import expanded_length, tokenize_prompt
from yivl.data.tokenizer import YiTokenizer
from yivl.errors import YivlError
from yivl.evaluation.items import Item
from yivl.evaluation.metrics import TaskMetrics
from yivl.evaluation.prompting import Prepared, render_question
from yivl.evaluation.sources import RawRecord

Records = list[dict[str, Any]]


@dataclass(frozen=True)
class NoOptions:
    """The options of a type that has none of its own (every type takes ``limit``, ``image_folder``,
    ``images``)."""


@dataclass(frozen=True)
class GenerationOptions:
    """The options of every generation type."""

    max_new_tokens: int = 16


def choice(default: str, *choices: str) -> Any:
    """A dataclass field whose value must be one of ``choices`` (checked when a task entry is read)."""
    return field(default=default, metadata={"choices": choices})


class TaskType(ABC):
    """One evaluation task type. Methods take the task's options as the plain mapping of its entry
    (``TaskSpec.options``), so the summary and a resumed run see the same values."""

    name: ClassVar[str]
    """The type's name in ``tasks=[TYPE:PATH]``, ``task_options.<name>`` and ``val_generation.type``."""
    aliases: ClassVar[tuple[str, ...]] = ()
    """Other names of the type (``pope`` for ``yesno``)."""
    Options: ClassVar[type] = NoOptions
    generation: ClassVar[bool] = True
    """The type generates text (in its default mode); ``val_generation`` runs only such types."""
    reads: ClassVar[tuple[str, ...]] = ()
    """Other types whose records (their ``task_type`` field) this type also scores."""
    display: ClassVar[tuple[str, ...]] = ()
    """Metrics shown in the table, the chart and training's log, in order (those present)."""
    group_prefixes: ClassVar[tuple[str, ...]] = ()
    """Group metrics shown in the table after ``display`` (the rest stay in summary.json)."""
    parsed_metrics: ClassVar[tuple[str, ...] | None] = ()
    """Metrics that depend on parsing generated answers (their rows show n_unparsed); None: all."""
    percent: ClassVar[bool] = False
    """Metrics are percentages (2 decimals; the chart's axis runs 0-100)."""

    def defaults(self) -> dict[str, Any]:
        """The options' defaults, in field order."""
        return asdict(self.Options())

    def check_options(self, task: str, options: Mapping[str, Any]) -> None:
        """The enumerated options hold one of their values (a one-line YivlError otherwise)."""
        for option in fields(self.Options):
            valid = option.metadata.get("choices")
            if valid and option.name in options and options[option.name] not in valid:
                raise YivlError(
                    f"task {task}: {option.name}={options[option.name]!r}; choose one of {', '.join(valid)}"
                )

    def generates(self, options: Mapping[str, Any]) -> bool:
        """True when the task generates text."""
        return self.generation

    def scores_likelihood(self, options: Mapping[str, Any]) -> bool:
        """True when the task scores ``Prepared.sequences`` (``score_sequences``)."""
        return False

    @abstractmethod
    def build_item(self, record: RawRecord, options: Mapping[str, Any]) -> Item:
        """Check ``record`` for the fields the type needs and build its item (YivlError on a bad one)."""

    def prepare(
        self, item: Item, options: Mapping[str, Any], tokenizer: YiTokenizer, image_tokens: int
    ) -> Prepared:
        """The item's model inputs: here the generation prompt of ``item.question``, when it generates."""
        out = Prepared()
        if self.generates(options):
            out.prompt = render_question(item.question or "", item.image is not None)
            out.prompt_ids = tokenize_prompt(tokenizer, out.prompt)
            out.length = expanded_length(out.prompt_ids, image_tokens)
        return out

    def score_output(self, item: Item, output: str, options: Mapping[str, Any], seed: int) -> dict[str, Any]:
        """Fields a generated answer adds to its sample record (none: the type scores the whole task at
        once). ``seed`` seeds a parser's per-question guess."""
        return {}

    def padding_side(self, options: Mapping[str, Any]) -> str:
        """The side scored sequences are padded on."""
        return "right"

    def score_sequences(
        self, item: Item, sums: Sequence[float], counts: Sequence[int], options: Mapping[str, Any]
    ) -> dict[str, Any]:
        """Fields the summed log-probs and token counts of the item's sequences add to its record."""
        raise NotImplementedError(f"task type {self.name} scores no sequences")

    @abstractmethod
    def summarize(self, records: Records, options: Mapping[str, Any], iters: int, seed: int) -> TaskMetrics:
        """The task's metrics from its scored records (ordered by ``index``; at least one)."""

    def chance(self, records: Records) -> Mapping[str, float]:
        """Expected score of uniform random guessing, where it is defined (percent)."""
        return {}

    def parsers(self, options: Mapping[str, Any]) -> dict[str, str]:
        """How answers were parsed, for summary.json's ``parsers``."""
        return {}


def column(records: Records, key: str) -> list[Any]:
    """``key`` of every record."""
    return [r[key] for r in records]


def group_labels(records: Records, key: str) -> list[str | None] | None:
    """The per-record group labels of ``key``, or None when no record has one."""
    values = [r.get(key) for r in records]
    return values if any(v is not None for v in values) else None
