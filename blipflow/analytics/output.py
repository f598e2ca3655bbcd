"""A report's rows as a terminal table, JSON lines, CSV or a Parquet file; as Markdown and JSON values for artifacts."""

from __future__ import annotations

import csv
import sys
from contextlib import nullcontext
from datetime import datetime
from enum import Enum
from pathlib import Path
from typing import Any, TextIO

import orjson
import pyarrow as pa
import pyarrow.parquet as pq
from rich.console import Console
from rich.table import Table

JSON_TIMES = orjson.OPT_NAIVE_UTC | orjson.OPT_UTC_Z  # report times are UTC


class OutputFormat(str, Enum):
    table = "table"
    json = "json"
    csv = "csv"
    parquet = "parquet"


def write_rows(table: pa.Table, output: OutputFormat, *, title: str, to: Path | None = None) -> Path | None:
    """Write `table` to `to` (stdout when None; a Parquet file needs a path). Returns the file written, if any."""
    if output is OutputFormat.parquet:
        assert to is not None, "a Parquet report goes to a file"
        pq.write_table(table, to)
        return to
    with (open(to, "w", encoding="utf-8", newline="") if to else nullcontext(sys.stdout)) as stream:
        if output is OutputFormat.table:
            # a terminal wraps the table to fit; a pipe or a file gets whole lines
            Console(file=stream, width=None if stream.isatty() else 250).print(rich_table(table, title))
        elif output is OutputFormat.json:
            for row in table.to_pylist():
                stream.write(orjson.dumps(row, option=JSON_TIMES).decode() + "\n")
        else:
            write_csv(table, stream)
    return to


def rich_table(table: pa.Table, title: str) -> Table:
    shown = Table(title=title, title_justify="left")
    for field in table.schema:
        numeric = pa.types.is_integer(field.type) or pa.types.is_floating(field.type)
        shown.add_column(field.name, justify="right" if numeric else "left", overflow="fold")
    for row in table.to_pylist():
        shown.add_row(*(cell_text(value) for value in row.values()))
    return shown


def write_csv(table: pa.Table, stream: TextIO) -> None:
    writer = csv.writer(stream)
    writer.writerow(table.column_names)
    for row in table.to_pylist():
        writer.writerow([cell_text(value) for value in row.values()])


def cell_text(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, datetime):
        return value.isoformat(sep=" ", timespec="seconds")
    if isinstance(value, float):
        return f"{value:g}" if abs(value) < 1e6 else f"{value:.0f}"
    return str(value)



def json_rows(table: pa.Table) -> list[dict[str, Any]]:
    """The rows as plain JSON values (times as ISO text), for whatever takes JSON."""
    return orjson.loads(orjson.dumps(table.to_pylist(), option=JSON_TIMES))


def markdown_table(table: pa.Table, limit: int) -> str:
    """The first `limit` rows as a Markdown table (cells escaped so content cannot break the table)."""
    def cell(value: Any) -> str:
        return cell_text(value).replace("\\", "\\\\").replace("|", "\\|").replace("\n", " ")

    lines = ["| " + " | ".join(table.column_names) + " |", "|" + "---|" * table.num_columns]
    lines += ["| " + " | ".join(cell(value) for value in row.values()) + " |"
              for row in table.slice(0, limit).to_pylist()]
    if table.num_rows > limit:
        lines.append(f"\n_first {limit} of {table.num_rows} rows_")
    return "\n".join(lines)
