"""``stats``: token-length and image-size distributions of a dataset, printed and drawn as a PNG.

Token lengths count the image features (what the LLM sees); only usable records are counted, and the
number of rejects is shown beside them (``validate`` lists their reasons).
"""

from __future__ import annotations

import argparse
from collections import Counter
from pathlib import Path

from data_tools.common import add_format_args, add_model_args, reject_check
from data_tools.report import console, percentiles, stats_table
from data_tools.validate import add_input_args, outcomes
from yivl.data.reasons import Tally

HELP = "token-length and image-size distributions: a table and a PNG"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_input_args(parser)
    add_model_args(parser)
    add_format_args(parser)
    parser.add_argument(
        "--plot",
        type=Path,
        default=Path("data_stats.png"),
        help="where to draw the histograms (default data_stats.png)",
    )


def run(args: argparse.Namespace) -> int:
    tokens: list[int] = []
    widths: list[int] = []
    heights: list[int] = []
    tally = Tally()
    for outcome in outcomes(args, "stats"):
        tally.add(outcome.reason, outcome.has_image, outcome.repairs)
        if outcome.reason is not None:
            continue
        tokens.append(outcome.tokens)
        if outcome.image_size is not None:
            widths.append(outcome.image_size[0])
            heights.append(outcome.image_size[1])
    rows = {"tokens": percentiles(Counter(tokens))}
    if widths:
        rows["image width"] = percentiles(Counter(widths))
        rows["image height"] = percentiles(Counter(heights))
        aspects = Counter(round(100 * w / h) for w, h in zip(widths, heights, strict=True))
        rows["aspect (w/h) x100"] = percentiles(aspects)
    rejected = sum(tally.rejected.values())
    console.print(stats_table(f"{len(tokens)} usable samples ({rejected} rejected)", rows))
    draw(args.plot, tokens, widths, heights)
    console.print(f"plot: {args.plot}")
    reject_check(tally, args, str(args.input))
    return 0


def draw(path: Path, tokens: list[int], widths: list[int], heights: list[int]) -> None:
    """Histograms of token lengths and aspect ratios, and a width-height scatter, in one PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 3, figsize=(15, 4))
    axes[0].hist(tokens or [0], bins=50, color="tab:blue")
    axes[0].set(title="tokens per sample (after image expansion)", xlabel="tokens", ylabel="samples")
    axes[1].scatter(widths, heights, s=4, alpha=0.4, color="tab:orange")
    axes[1].set(title="image size", xlabel="width (px)", ylabel="height (px)")
    ratios = [w / h for w, h in zip(widths, heights, strict=True)]
    axes[2].hist(ratios or [1.0], bins=50, color="tab:green")
    axes[2].set(title="aspect ratio (w/h)", xlabel="w/h", ylabel="images")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)
