"""The bench scripts' result table: a rich table on the terminal, or Markdown for bench/RESULTS.md."""

from __future__ import annotations

from collections.abc import Sequence

from rich.console import Console
from rich.table import Table


def print_table(
    title: str,
    columns: Sequence[str],
    rows: Sequence[Sequence[str]],
    markdown: bool = False,
    markdown_title: bool = True,
) -> None:
    """Print ``rows`` (cells already formatted) under ``columns``: a rich table titled ``title``, or
    with ``markdown`` a Markdown table, after the title and a blank line if ``markdown_title``."""
    if markdown:
        if markdown_title:
            print(f"{title}\n")
        print("| " + " | ".join(columns) + " |\n|" + "---|" * len(columns))
        for row in rows:
            print("| " + " | ".join(row) + " |")
        return
    table = Table(title=title)
    for column in columns:
        table.add_column(column)
    for row in rows:
        table.add_row(*row)
    Console().print(table)
