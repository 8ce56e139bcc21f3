"""Argument parsing and dispatch for ``python -m data_tools``."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from data_tools import convert, inspect_sample, laion, merge, stats, validate
from yivl.cli import run_reporting_errors

COMMANDS = {
    "convert": convert,
    "laion": laion,
    "merge": merge,
    "validate": validate,
    "stats": stats,
    "inspect": inspect_sample,
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m data_tools",
        description="Prepare Yi-VL training data: every input record is written or rejected with a reason.",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name, module in COMMANDS.items():
        description = module.__doc__.strip().split(": ", 1)[1]  # drop the ``name``: prefix
        p = sub.add_parser(
            name,
            help=module.HELP,
            description=description,
            formatter_class=argparse.RawDescriptionHelpFormatter,
        )
        module.add_arguments(p)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Parse ``argv`` and run the command; user errors print one line and exit 2."""
    args = build_parser().parse_args(argv)
    args.argv = list(sys.argv[1:] if argv is None else argv)  # for the resume command in messages
    return run_reporting_errors(lambda: COMMANDS[args.command].run(args))


if __name__ == "__main__":
    sys.exit(main())
