"""The ``tasks=[...]`` entries of ``configs/eval.yaml`` -> task specs (types: ``yivl.evaluation.registry``).

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
from yivl.evaluation.registry import get_type, type_names
from yivl.evaluation.task_types.base import TaskType

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
    def kind(self) -> TaskType:
        """The registered type of the task (``yivl.evaluation.registry``)."""
        return get_type(self.type)

    @property
    def generates(self) -> bool:
        """True when the task generates text (mcq only in generate/both mode)."""
        return self.kind.generates(self.options)

    @property
    def scores_likelihood(self) -> bool:
        """True when the task scores token sequences (loss; mcq in likelihood/both mode)."""
        return self.kind.scores_likelihood(self.options)


def canonical_type(name: str, where: str = "tasks") -> str:
    """``pope`` -> ``yesno``; unknown names are a YivlError listing the valid ones."""
    return get_type(name, where).name


def parse_tasks(entries: Any, task_options: Mapping[str, Mapping[str, Any]]) -> list[TaskSpec]:
    """Task entries (a list, or one string) -> specs with merged options; one-line errors for bad entries."""
    if entries is None or (isinstance(entries, Sequence) and not isinstance(entries, str) and not entries):
        raise YivlError(
            "no tasks given; pass tasks=[TYPE:PATH,...] (types: "
            + ", ".join(type_names())
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
    task_type = get_type(kind)
    # configs/task_options/<type>.yaml, or the options dataclass of a type that has no config file
    defaults = dict(task_options[kind]) if kind in task_options else task_type.defaults()
    unknown = sorted(set(overrides) - set(defaults) - set(COMMON_OPTIONS))
    if unknown:
        raise YivlError(
            f"task {name}: unknown option(s) {', '.join(unknown)}; {kind} takes "
            + ", ".join(sorted(set(defaults) | set(COMMON_OPTIONS)))
        )
    options = {**defaults, **BENCHMARK_OPTIONS.get(benchmark or "", {}), **overrides}
    task_type.check_options(name, options)
    _check_common_options(name, options)
    return TaskSpec(name, kind, Path(path).expanduser(), options, benchmark, frozenset(overrides))


def _kind_and_benchmark(word: str, where: str) -> tuple[str, str | None]:
    """A task type or a benchmark name -> (canonical type, benchmark or None)."""
    if word in BENCHMARKS and word not in type_names():
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
    words = (*type_names(), *BENCHMARKS)
    head, sep, rest = entry.partition(":")
    if not sep or not rest:
        raise YivlError(
            f"task entry {entry!r} must be TYPE:PATH or NAME:TYPE:PATH (types: {', '.join(type_names())})"
        )
    second, sep, path = rest.partition(":")
    if sep and second in words and path:
        return head, *_kind_and_benchmark(second, f"task {entry!r}"), path
    if head in words:
        return head, *_kind_and_benchmark(head, f"task {entry!r}"), rest
    raise YivlError(
        f"task entry {entry!r}: unknown task type {head!r}; valid task types: {', '.join(type_names())}; "
        f"benchmarks: {', '.join(BENCHMARKS)}"
    )


def _check_common_options(name: str, options: Mapping[str, Any]) -> None:
    """Positive token budgets and limits (the type has checked its enumerated options)."""
    budget = options.get("max_new_tokens")
    if budget is not None and (not isinstance(budget, int) or budget < 1):
        raise YivlError(f"task {name}: max_new_tokens must be a positive integer, got {budget!r}")
    limit = options.get("limit")
    if limit is not None and (not isinstance(limit, int) or limit < 1):
        raise YivlError(f"task {name}: limit must be a positive integer or null, got {limit!r}")
