"""How a benchmark script ends: its results as a Markdown table on the console, and as JSON in a file.

The scripts run as `python scripts/bench/<name>.py`, which puts this folder first on `sys.path`: they import this
module as `_report`.
"""

import json
from collections.abc import Callable, Sequence
from typing import Any

# A column: its header, and its cell as a `str.format` template of the row ("{step_s:.2f}") or a function of the row.
Column = tuple[str, str | Callable[[dict], str]]


def markdown_table(rows: Sequence[dict], columns: Sequence[Column], numbers_right: bool = True) -> str:
    """The table of `rows`, one line each; with `numbers_right`, every column but the first is right-aligned."""
    separator = "|---|" + "---:|" * (len(columns) - 1) if numbers_right else "|" + "---|" * len(columns)
    lines = ["| " + " | ".join(header for header, _ in columns) + " |", separator]
    for row in rows:
        cells = [cell.format(**row) if isinstance(cell, str) else cell(row) for _, cell in columns]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def write_json(path: str, data: Any) -> None:
    with open(path, "w") as f:
        json.dump(data, f, indent=2)


def report(
    rows: Sequence[dict],
    columns: Sequence[Column],
    json_path: str | None,
    title: str | None = None,
    data: Any = None,
    numbers_right: bool = True,
) -> str:
    """Print `title` (when given) and the table of `rows`, and write `data` (by default the rows) to `json_path` (when
    given) as JSON; returns the table."""
    if title is not None:
        print(title)
    table = markdown_table(rows, columns, numbers_right)
    print(table)
    if json_path:
        write_json(json_path, list(rows) if data is None else data)
    return table
