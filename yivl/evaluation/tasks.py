"""Task types, their options, and the ``tasks=[...]`` entries of ``configs/eval.yaml``.

An entry is ``"TYPE:PATH"``, ``"NAME:TYPE:PATH"`` or a mapping ``{type, path, name?, <options>}``; the
options of a type default to ``task_options.<type>`` and can be overridden per entry. A benchmark
name (``mmbench``, ``seedbench``, ``textvqa``...) can stand where the type goes: it implies the type,
and it picks the column layout of a benchmark table (``benchmarks``).
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from yivl.errors import YivlError
from yivl.evaluation.benchmarks import BENCHMARK_OPTIONS, BENCHMARKS

TASK_TYPES = ("loss", "vqa", "mcq", "yesno", "pope", "mme", "caption")
"""Valid task types; ``pope`` is another name for ``yesno`` (POPE metrics)."""
ALIASES = {"pope": "yesno"}
GENERATION_TYPES = ("vqa", "mcq", "yesno", "mme", "caption")
MCQ_MODES = ("generate", "likelihood", "both")
MCQ_PARSERS = ("default", "mmmu")
LIKELIHOOD_TARGETS = ("text", "letter")
PADDING_SIDES = ("right", "left")
COMMON_OPTIONS = ("limit", "image_folder", "images")
"""Options of every type: ``limit`` (default: the run's), ``image_folder`` (JSON image paths; default:
the file's folder), ``images`` (GQA's images Parquet)."""
_NAME = re.compile(r"^[A-Za-z0-9_.-]+$")


@dataclass
class TaskSpec:
    """One task of a run: a unique name (used in file names), its canonical type, file and options."""

    name: str
    type: str
    path: Path
    options: dict[str, Any] = field(default_factory=dict)
    benchmark: str | None = None
    explicit: frozenset[str] = frozenset()  # the options the entry set itself

    @property
    def generates(self) -> bool:
        """True when the task generates text (mcq only in generate/both mode)."""
        if self.type == "mcq":
            return self.options.get("mode", "generate") != "likelihood"
        return self.type in GENERATION_TYPES

    @property
    def scores_likelihood(self) -> bool:
        return self.type == "mcq" and self.options.get("mode", "generate") != "generate"


def canonical_type(name: str, where: str = "tasks") -> str:
    """``pope`` -> ``yesno``; unknown names are a YivlError listing the valid ones."""
    if name not in TASK_TYPES:
        raise YivlError(f"{where}: unknown task type {name!r}; valid task types: {', '.join(TASK_TYPES)}")
    return ALIASES.get(name, name)


def parse_tasks(entries: Any, task_options: Mapping[str, Mapping[str, Any]]) -> list[TaskSpec]:
    """Task entries (a list, or one string) -> specs with merged options; one-line errors for bad entries."""
    if entries is None or (isinstance(entries, Sequence) and not isinstance(entries, str) and not entries):
        raise YivlError(
            "no tasks given; pass tasks=[TYPE:PATH,...] (types: "
            + ", ".join(TASK_TYPES)
            + ") or eval=synthetic"
        )
    if isinstance(entries, str | Mapping):
        entries = [entries]
    specs = [_parse_entry(entry, task_options) for entry in entries]
    seen: set[str] = set()
    for spec in specs:
        if spec.name in seen:
            raise YivlError(
                f"two tasks are named {spec.name!r}; name them apart with NAME:TYPE:PATH or name=..."
            )
        seen.add(spec.name)
    return specs


def _parse_entry(entry: Any, task_options: Mapping[str, Mapping[str, Any]]) -> TaskSpec:
    if isinstance(entry, str):
        name, kind, benchmark, path = _split_entry(entry)
        overrides: dict[str, Any] = {}
    elif isinstance(entry, Mapping):
        overrides = {k: v for k, v in entry.items() if k not in ("name", "type", "path", "benchmark")}
        name, kind, benchmark, path = _mapping_fields(entry)
    else:
        raise YivlError(f"task entry {entry!r} must be 'TYPE:PATH', 'NAME:TYPE:PATH' or a mapping")
    if not _NAME.match(name):
        raise YivlError(f"task name {name!r} may only use letters, digits, '_', '-' and '.'")
    defaults = dict(task_options.get(kind, {}))
    unknown = sorted(set(overrides) - set(defaults) - set(COMMON_OPTIONS))
    if unknown:
        raise YivlError(
            f"task {name}: unknown option(s) {', '.join(unknown)}; {kind} takes "
            + ", ".join(sorted(set(defaults) | set(COMMON_OPTIONS)))
        )
    options = {**defaults, **BENCHMARK_OPTIONS.get(benchmark or "", {}), **overrides}
    _check_options(name, kind, options)
    return TaskSpec(name, kind, Path(path).expanduser(), options, benchmark, frozenset(overrides))


def _kind_and_benchmark(word: str, where: str) -> tuple[str, str | None]:
    """A task type or a benchmark name -> (canonical type, benchmark or None)."""
    if word in BENCHMARKS and word not in TASK_TYPES:
        return BENCHMARKS[word], word
    return canonical_type(word, where), word if word in BENCHMARKS else None


def _mapping_fields(entry: Mapping[str, Any]) -> tuple[str, str, str | None, str]:
    """(name, type, benchmark, path) of a mapping entry; ``type`` may be left to ``benchmark``."""
    if "path" not in entry or ("type" not in entry and "benchmark" not in entry):
        raise YivlError(f"task entry {dict(entry)} needs 'path' and a 'type' or a 'benchmark'")
    where = f"task {dict(entry)!r}"
    benchmark = entry.get("benchmark")
    if benchmark is not None and benchmark not in BENCHMARKS:
        raise YivlError(f"{where}: unknown benchmark {benchmark!r}; known: {', '.join(BENCHMARKS)}")
    kind, implied = _kind_and_benchmark(str(entry.get("type") or benchmark), where)
    benchmark = benchmark or implied
    if benchmark is not None and BENCHMARKS[benchmark] != kind:
        raise YivlError(f"{where}: benchmark {benchmark} is scored as {BENCHMARKS[benchmark]}, not {kind}")
    name = str(entry.get("name") or entry.get("type") or benchmark)
    return name, kind, benchmark, str(entry["path"])


def _split_entry(entry: str) -> tuple[str, str, str | None, str]:
    """``TYPE:PATH`` or ``NAME:TYPE:PATH`` (the path may itself hold colons; a benchmark name may stand
    for the type) -> (name, type, benchmark, path)."""
    words = (*TASK_TYPES, *BENCHMARKS)
    head, sep, rest = entry.partition(":")
    if not sep or not rest:
        raise YivlError(
            f"task entry {entry!r} must be TYPE:PATH or NAME:TYPE:PATH (types: {', '.join(TASK_TYPES)})"
        )
    second, sep, path = rest.partition(":")
    if sep and second in words and path:
        return head, *_kind_and_benchmark(second, f"task {entry!r}"), path
    if head in words:
        return head, *_kind_and_benchmark(head, f"task {entry!r}"), rest
    raise YivlError(
        f"task entry {entry!r}: unknown task type {head!r}; valid task types: {', '.join(TASK_TYPES)}; "
        f"benchmarks: {', '.join(BENCHMARKS)}"
    )


def _check_options(name: str, kind: str, options: Mapping[str, Any]) -> None:
    """Values of the enumerated options, and positive token budgets."""
    choices = {
        "mode": MCQ_MODES,
        "parser": MCQ_PARSERS,
        "likelihood_target": LIKELIHOOD_TARGETS,
        "padding_side": PADDING_SIDES,
        "norm": ("evalai", "official"),
        "tokenizer": ("python", "java", "none"),
    }
    for key, valid in choices.items():
        if key in options and options[key] not in valid:
            raise YivlError(f"task {name}: {key}={options[key]!r}; choose one of {', '.join(valid)}")
    budget = options.get("max_new_tokens")
    if budget is not None and (not isinstance(budget, int) or budget < 1):
        raise YivlError(f"task {name}: max_new_tokens must be a positive integer, got {budget!r}")
    limit = options.get("limit")
    if limit is not None and (not isinstance(limit, int) or limit < 1):
        raise YivlError(f"task {name}: limit must be a positive integer or null, got {limit!r}")
