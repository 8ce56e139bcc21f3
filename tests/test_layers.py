"""The import rule of docs/architecture.md ("Import rule"), read from the source with ``ast``.

Every ``import`` counts: module level, inside functions and under ``if TYPE_CHECKING:`` alike, because
each one is an arrow between two rooms whether or not it runs at import time.
"""

from __future__ import annotations

import ast
from collections import deque
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
ENTRY_POINTS = {"train": "training", "evaluate": "evaluation", "infer": "serving"}

# yivl's own top-level modules are placed one by one; a new one must be added to BASE or GLUE.
BASE = {"yivl", "yivl.constants", "yivl.errors"}
BASE_PACKAGES = ("yivl.config",)  # schemas and vocabulary: no torch, importable from every layer
GLUE = {"yivl.cli", "yivl.progress"}  # entry-point glue: one-line errors, progress bars
PACKAGES = ("models", "data", "checkpoint", "training", "evaluation", "serving")

# Which layers a layer may import (its own is always allowed).
ALLOWED = {
    "base": {"base"},
    "glue": {"base"},
    "models": {"base"},
    "data": {"base", "models"},
    "checkpoint": {"base", "models", "data"},
    "training": {"base", "glue", "models", "data", "checkpoint"},
    "evaluation": {"base", "glue", "models", "data", "checkpoint"},
    "serving": {"base", "glue", "models", "data", "checkpoint"},
    "data_tools": {"base", "glue", "models", "data", "checkpoint"},
}

SHOWN = {"base": "yivl.constants/errors", "glue": "yivl.cli/progress", "data_tools": "data_tools"}
ORDER = ["models", "data", "checkpoint", "glue", "base"]

# Training runs evaluation's validation tasks; these are the only evaluation modules it may import.
TRAINING_MAY_IMPORT = {"yivl.evaluation.lightning", "yivl.evaluation.val_generation"}

LIGHTNING = {"lightning", "pytorch_lightning", "lightning_fabric", "lightning_utilities", "torchmetrics"}
HYDRA = {"hydra", "omegaconf"}
# data/ uses Lightning only for its DataModule and the DataModule's callback.
DATA_LIGHTNING = {"yivl.data.datamodule", "yivl.data.callbacks"}


@dataclass(frozen=True)
class Import:
    source: str  # importing module, e.g. yivl.checkpoint.export
    path: str  # file relative to the project root
    line: int
    target: str  # imported module, resolved to a module file where one exists

    def __str__(self) -> str:
        return f"{self.path}:{self.line} -> {self.target}"


def project_files() -> list[Path]:
    files = sorted((ROOT / "yivl").rglob("*.py")) + sorted((ROOT / "data_tools").rglob("*.py"))
    return files + [ROOT / f"{name}.py" for name in ENTRY_POINTS]


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {module_name(p): p for p in project_files()}


def resolve(base: str, name: str) -> str:
    """``from base import name``: the module ``base.name`` when it is one of ours, else ``base``."""
    return f"{base}.{name}" if f"{base}.{name}" in MODULES else base


def imports_of(path: Path) -> list[Import]:
    source, rel = module_name(path), path.relative_to(ROOT).as_posix()
    package = source if path.name == "__init__.py" else source.rpartition(".")[0]
    found = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), filename=rel)):
        if isinstance(node, ast.Import):
            found += [Import(source, rel, node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*anchor, base] if base else anchor)
            found += [Import(source, rel, node.lineno, resolve(base, a.name)) for a in node.names]
    return found


ALL_IMPORTS = [imp for path in project_files() for imp in imports_of(path)]


def layer(module: str) -> str | None:
    """The layer a project module belongs to; None for third-party modules."""
    if module in BASE or module.startswith(tuple(f"{p}." for p in BASE_PACKAGES)) or module in BASE_PACKAGES:
        return "base"
    if module in GLUE:
        return "glue"
    if module in ENTRY_POINTS:
        return "entry"
    top, _, rest = module.partition(".")
    if top == "data_tools":
        return "data_tools"
    if top == "yivl":
        sub = rest.partition(".")[0]
        return sub if sub in PACKAGES else "unplaced"
    return None


def shown(layers: set[str]) -> str:
    return ", ".join(SHOWN.get(name, f"yivl.{name}") for name in ORDER if name in layers)


def forbidden(imp: Import) -> str | None:
    """Why ``imp`` breaks the rule, or None when it keeps it."""
    here, there = layer(imp.source), layer(imp.target)
    top = imp.target.partition(".")[0]
    if there is None:
        if here == "models" and top in LIGHTNING | HYDRA:
            return "models/ uses neither Lightning nor Hydra"
        if here == "data" and top in LIGHTNING and imp.source not in DATA_LIGHTNING:
            return "data/ uses Lightning only in its DataModule"
        return None
    if here == "entry":
        app = ENTRY_POINTS[imp.source]
        return None if there in {"base", "glue", app} else f"{imp.source}.py is the entry point of {app} only"
    if there == here:
        return None
    if here == "training" and imp.target in TRAINING_MAY_IMPORT:
        return None
    if there in ALLOWED[here]:
        return None
    if here == "training" and there == "evaluation":
        return f"training may import only {sorted(TRAINING_MAY_IMPORT)} from evaluation"
    return f"{here} may import only {shown(ALLOWED[here])}"


def yivl_graph(imports: list[Import]) -> dict[str, dict[str, Import]]:
    """module -> {imported yivl module: the first import statement of it}."""
    graph: dict[str, dict[str, Import]] = {}
    for imp in imports:
        ours = imp.source.startswith("yivl") and imp.target.startswith("yivl") and imp.target in MODULES
        if ours and imp.target != imp.source:
            graph.setdefault(imp.source, {}).setdefault(imp.target, imp)
    return graph


def cycles(imports: list[Import]) -> list[list[str]]:
    """Strongly connected groups of yivl modules that import each other (Tarjan), each sorted."""
    graph = yivl_graph(imports)
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    groups: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        for nxt in sorted(graph.get(node, {})):
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            group = stack[stack.index(node) :]
            del stack[stack.index(node) :]
            if len(group) > 1:
                groups.append(sorted(group))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return sorted(groups)


def shortest_cycle(imports: list[Import], group: list[str]) -> list[Import]:
    """The import statements of a shortest cycle through ``group[0]`` inside ``group`` (breadth first)."""
    graph, start = yivl_graph(imports), group[0]
    came_by: dict[str, Import] = {}
    queue = deque([start])
    while queue:
        node = queue.popleft()
        for nxt, imp in sorted(graph.get(node, {}).items()):
            if nxt == start:
                path = [imp]
                while path[-1].source != start:
                    path.append(came_by[path[-1].source])
                return path[::-1]
            if nxt in group and nxt not in came_by:
                came_by[nxt] = imp
                queue.append(nxt)
    raise AssertionError(f"{group} is not a cycle")


def describe_cycle(imports: list[Import], group: list[str]) -> str:
    """``a -> b (a.py:3) -> a (b.py:9)``, plus the rest of the group when it is larger."""
    path = shortest_cycle(imports, group)
    text = path[0].source + "".join(f" -> {imp.target} ({imp.path}:{imp.line})" for imp in path)
    if len(group) > len(path):
        text += f"  [one loop of {len(group)} modules that reach each other: {', '.join(group)}]"
    return text


def test_the_rule_reads_every_project_module():
    names = set(MODULES)
    assert {"yivl.models.yivl", "yivl.checkpoint.export", "data_tools.convert", "train"} <= names
    unplaced = sorted(m for m in names if layer(m) == "unplaced")
    assert not unplaced, f"add {unplaced} to BASE or GLUE in tests/test_layers.py (and docs/architecture.md)"
    assert names >= TRAINING_MAY_IMPORT | DATA_LIGHTNING  # the rule names modules that exist
    # function-level imports are seen: summary.versions() imports yivl inside the function
    assert any(i.source == "yivl.evaluation.summary" and i.target == "yivl" for i in ALL_IMPORTS)


def test_no_import_crosses_the_layers():
    broken = sorted({f"{imp}  ({why})" for imp in ALL_IMPORTS if (why := forbidden(imp))})
    assert not broken, "imports that break the rule in docs/architecture.md:\n" + "\n".join(broken)


def test_no_import_cycles_among_yivl_modules():
    found = cycles(ALL_IMPORTS)
    assert not found, "import cycles among yivl modules:\n" + "\n".join(
        describe_cycle(ALL_IMPORTS, g) for g in found
    )


def test_the_checks_catch_a_forbidden_import_and_a_cycle():
    bad = Import("yivl.evaluation.prompting", "yivl/evaluation/prompting.py", 1, "yivl.serving.engine")
    assert forbidden(bad) == (
        "evaluation may import only yivl.models, yivl.data, yivl.checkpoint, yivl.cli/progress, "
        "yivl.constants/errors"
    )
    assert forbidden(Import("yivl.models.yivl", "yivl/models/yivl.py", 1, "lightning.pytorch"))
    assert forbidden(Import("yivl.training.run", "yivl/training/run.py", 1, "yivl.evaluation.runner"))
    assert not forbidden(Import("yivl.training.run", "yivl/training/run.py", 1, "yivl.evaluation.lightning"))
    pair = [
        Import("yivl.serving.api", "yivl/serving/api.py", 1, "yivl.serving.api_stream"),
        Import("yivl.serving.api_stream", "yivl/serving/api_stream.py", 1, "yivl.serving.api"),
    ]
    assert cycles(pair) == [["yivl.serving.api", "yivl.serving.api_stream"]]
    assert describe_cycle(pair, ["yivl.serving.api", "yivl.serving.api_stream"]) == (
        "yivl.serving.api -> yivl.serving.api_stream (yivl/serving/api.py:1)"
        " -> yivl.serving.api (yivl/serving/api_stream.py:1)"
    )
