"""Manifests from journal commits, distributions, and the summary tables the tools print at the end."""

from __future__ import annotations

import json
import tarfile
from collections import Counter
from collections.abc import Mapping
from pathlib import Path

from rich.console import Console
from rich.table import Table

from data_tools.duplicates import describe as describe_duplicates
from data_tools.journal import REJECTS, Journal
from yivl.data.reasons import REASONS, REPAIRS, Tally

console = Console(highlight=False)


def percentiles(hist: Mapping[int, int], qs: tuple[float, ...] = (0.5, 0.9, 0.99)) -> dict[str, float]:
    """min, mean, the ``qs`` quantiles and max of a ``{value: count}`` histogram."""
    total = sum(hist.values())
    if not total:
        return {}
    values = sorted(hist)
    out: dict[str, float] = {"min": values[0], "mean": round(sum(v * c for v, c in hist.items()) / total, 2)}
    cum, qi = 0, 0
    for v in values:
        cum += hist[v]
        while qi < len(qs) and cum >= qs[qi] * total:
            out[f"p{round(qs[qi] * 100)}"] = v
            qi += 1
    out["max"] = values[-1]
    return out


def build_manifest(journal: Journal, total_input: int, extra: Mapping | None = None) -> dict:
    """Counts, shard list, sizes, token-length and image statistics aggregated over all commits."""
    shards = [c["shard"] for c in journal.commits if c.get("shard")]
    written = sum(s["samples"] for s in shards)
    rejected = sum(c["rejects"] for c in journal.commits)
    reasons: Counter = Counter()
    tokens: Counter = Counter()
    images: Counter = Counter()
    repaired: Counter = Counter()
    for c in journal.commits:
        reasons.update(c["reasons"])
        repaired.update(c.get("repaired", {}))
        tokens.update({int(k): v for k, v in c["tokens"].items()})
        images.update(c["images"])
    return {
        **journal.params,
        "records": {
            "input": total_input,
            "written": written,
            "rejected": rejected,
            "repaired": sum(c.get("repaired_records", 0) for c in journal.commits),
        },
        "reconciled": written + rejected == total_input,
        "rejects_by_reason": dict(reasons.most_common()),
        "repaired_by_reason": dict(repaired.most_common()),
        "rejected_images": sum(c.get("rejected_images", 0) for c in journal.commits),
        "shards": shards,
        "total_bytes": sum(s["bytes"] for s in shards),
        "token_length": percentiles(tokens),
        "images": dict(sorted(images.items())),
        **(extra or {}),
    }


def reasons_table(
    reasons: Mapping[str, int], title: str = "Rejected, by reason", column: str = "reason"
) -> Table:
    table = Table(title=title)
    table.add_column(column)
    table.add_column("count", justify="right")
    table.add_column("meaning")
    for reason, n in sorted(reasons.items(), key=lambda kv: (-kv[1], kv[0])):
        table.add_row(reason, str(n), REASONS.get(reason) or REPAIRS.get(reason, ""))
    return table


def manifest_tally(manifest: Mapping) -> Tally:
    """The counts of a conversion manifest, for the reject rule (yivl.data.guard)."""
    images = manifest.get("images", {})
    kept_images = sum(n for action, n in images.items() if action != "text_only")
    return Tally(
        kept=manifest["records"]["written"],
        rejected=dict(manifest["rejects_by_reason"]),
        repaired=dict(manifest.get("repaired_by_reason", {})),
        image_records=kept_images + manifest.get("rejected_images", 0),
        image_kept=kept_images,
    )


def stats_table(title: str, rows: Mapping[str, Mapping[str, float]]) -> Table:
    """One row per distribution (min, mean, quantiles, max)."""
    table = Table(title=title)
    table.add_column("")
    keys = ["min", "mean", "p50", "p90", "p99", "max"]
    for k in keys:
        table.add_column(k, justify="right")
    for name, stats in rows.items():
        table.add_row(name, *(str(stats.get(k, "-")) for k in keys))
    return table


def print_summary(manifest: Mapping, out_dir: str) -> bool:
    """Print the conversion summary; returns whether every input record is accounted for."""
    rec = manifest["records"]
    table = Table(title=f"{manifest['tool']}: {out_dir}")
    table.add_column("")
    table.add_column("value", justify="right")
    table.add_row("input records", str(rec["input"]))
    table.add_row("written", str(rec["written"]))
    table.add_row("rejected", str(rec["rejected"]))
    table.add_row("repaired (written)", str(rec.get("repaired", 0)))
    table.add_row("shards", str(len(manifest["shards"])))
    table.add_row("bytes", f"{manifest['total_bytes']:,}")
    for action, n in manifest.get("images", {}).items():
        table.add_row(f"images {action}", str(n))
    if "duplicate_ids" in manifest:  # counted, still written
        table.add_row("duplicate ids", describe_duplicates(manifest["duplicate_ids"]))
    console.print(table)
    if manifest.get("token_length"):
        console.print(
            stats_table("Tokens per sample (after image expansion)", {"tokens": manifest["token_length"]})
        )
    if manifest["rejects_by_reason"]:
        console.print(reasons_table(manifest["rejects_by_reason"]))
    if manifest.get("repaired_by_reason"):
        console.print(reasons_table(manifest["repaired_by_reason"], "Repaired (still written)", "repair"))
    ok = bool(manifest["reconciled"])
    sign = "[green]reconciled[/]" if ok else "[red]NOT reconciled[/]"
    console.print(
        f"{sign}: {rec['input']} input records = {rec['written']} written + {rec['rejected']} rejected"
    )
    return ok


def _shard_keys(path: Path) -> list[str]:
    """Sample keys of a shard from its member headers (no image bytes are decoded)."""
    with tarfile.open(path) as tar:
        keys = [m.name.partition(".")[0] for m in tar.getmembers() if m.isreg()]
    return list(dict.fromkeys(keys))


def verify_output(out_dir: Path, manifest: dict, keys_are_indices: bool) -> list[str]:
    """Re-count the output on disk against the input; returns the problems found (empty = reconciled).

    Counts the samples in every shard and the lines of the rejects file; with ``keys_are_indices``
    also checks that written keys and rejected indices cover every input index exactly once.
    """
    problems = []
    written: list[str] = []
    for shard in manifest["shards"]:
        keys = _shard_keys(out_dir / shard["name"])
        if len(keys) != shard["samples"]:
            problems.append(f"{shard['name']} holds {len(keys)} samples, the journal says {shard['samples']}")
        written += keys
    rejects_path = out_dir / REJECTS
    lines = rejects_path.read_bytes().splitlines() if rejects_path.exists() else []
    rejected = [json.loads(line)["index"] for line in lines]
    total = manifest["records"]["input"]
    if len(written) + len(rejected) != total:
        problems.append(f"{len(written)} written + {len(rejected)} rejected != {total} input records")
    if keys_are_indices:
        seen = Counter([int(k) for k in written] + [int(i) for i in rejected])
        dupes = [i for i, n in seen.items() if n > 1]
        missing = total - len(seen)
        if dupes or missing:
            problems.append(f"{len(dupes)} records appear twice and {missing} are missing")
    manifest["reconciled"] = not problems
    return problems
