"""How ``runs ls``, ``runs show`` and ``runs diff`` print runs: values as a person types
them, tables for the terminal, CSV, JSON and Markdown.

Values read as in a config (``null``, ``true``, ``[512, 256]``, ``0.0003``); metrics with
four decimals; times to the second. Tables in, text out: nothing here reads the store.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Mapping
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from mnist_exp.results.leaderboard import csv_table, markdown_table, text_table

if TYPE_CHECKING:
    import pandas as pd

FORMATS = ("table", "csv", "json", "markdown")
SHORT_ID = 8  # digits of a run id in tables: as the UI shows them, enough to tell runs apart


def shown(value: Any) -> str:
    """A value as it is written in a config or an override: ``null``, ``true``,
    ``[512, 256]``, ``0.0003``, ``adam``; a missing value as nothing."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "" if value is not None else "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, tuple | list):
        return "[" + ", ".join(shown(item) for item in value) + "]"
    if isinstance(value, float):
        return f"{value:.6g}"
    return str(value)


def metric(value: Any) -> str:
    """A metric with four decimals (seconds with one); missing as nothing."""
    if value is None or not isinstance(value, int | float) or math.isnan(value):
        return ""
    return f"{value:.4f}"


def duration(seconds: Any) -> str:
    """Seconds as ``42s``, ``3m07s`` or ``1h02m``; nothing while a run is going."""
    if seconds is None or (isinstance(seconds, float) and math.isnan(seconds)):
        return ""
    whole = round(float(seconds))
    if whole < 60:
        return f"{whole}s"
    minutes, secs = divmod(whole, 60)
    if minutes < 60:
        return f"{minutes}m{secs:02d}s"
    return f"{minutes // 60}h{minutes % 60:02d}m"


def moment(value: Any) -> str:
    """A start time (a pandas Timestamp or ms since the epoch) in local time, to the
    minute: ``2026-12-06 19:50``."""
    if isinstance(value, int | float):
        value = datetime.fromtimestamp(value / 1000, tz=UTC)
    else:
        value = value.to_pydatetime()
    return value.astimezone().strftime("%Y-%m-%d %H:%M")


def runs_listing(frame: pd.DataFrame, keys: list[str], metrics: list[str], form: str) -> str:
    """The runs of ``frame`` in format ``form`` (one of :data:`FORMATS`): id, name,
    status, start, duration, then ``keys`` and ``metrics``. The table and Markdown are
    for people (short ids, values as typed); CSV and JSON keep full ids, full key names
    and exact values."""
    metrics = [m for m in metrics if m in frame.columns]
    if form in ("csv", "json"):
        columns = ["run_id", "run_name", "status", "start_time", "duration", *keys, *metrics]
        return _machine_form(frame[columns], form)
    rows = [
        {
            "run": row["run_id"][:SHORT_ID],
            "name": row["run_name"] or "",
            "status": row["status"],
            "start": moment(row["start_time"]),
            "duration": duration(row["duration"]),
            **{key: shown(row[key]) for key in keys},
            **{name: metric(row[name]) for name in metrics},
        }
        for _, row in frame.iterrows()
    ]
    return text_table(rows) if form == "table" else markdown_table(rows)


def groups_listing(table: pd.DataFrame, key: str, metrics: list[str], form: str) -> str:
    """A :func:`mnist_exp.results.run_query.group_runs` table in format ``form``; for
    people each metric is one ``mean ± std`` column."""
    if form in ("csv", "json"):
        return _machine_form(table, form)
    rows = [
        {
            key: shown(row[key]),
            "runs": str(int(row["runs"])),
            **{
                name: f"{metric(row[f'{name} mean'])} ± {metric(row[f'{name} std'])}"
                for name in metrics
                if f"{name} mean" in table.columns and not math.isnan(row[f"{name} mean"])
            },
        }
        for _, row in table.iterrows()
    ]
    return text_table(rows) if form == "table" else markdown_table(rows)


def _machine_form(frame: pd.DataFrame, form: str) -> str:
    """CSV or JSON of ``frame``: times in ISO 8601, lists as lists, None as null."""
    records = [
        {column: _plain(value) for column, value in row.items()}
        for row in frame.to_dict(orient="records")
    ]
    if form == "json":
        return json.dumps(records, indent=2) + "\n"
    return csv_table(
        [
            {column: shown(value) if value is not None else "" for column, value in r.items()}
            for r in records
        ]
    )


def _plain(value: Any) -> Any:
    if hasattr(value, "isoformat"):
        return value.isoformat()
    if isinstance(value, tuple):
        return [_plain(item) for item in value]
    if isinstance(value, float) and math.isnan(value):
        return None
    if hasattr(value, "item"):  # a numpy scalar
        return value.item()
    return value


def key_value_lines(values: Mapping[str, Any], indent: int = 2) -> list[str]:
    """``key  value`` lines, the values aligned."""
    if not values:
        return []
    width = max(len(key) for key in values)
    return [f"{' ' * indent}{key.ljust(width)}  {value}" for key, value in values.items()]


def side_by_side(
    rows: Iterable[tuple[str, list[Any]]], headers: list[str], with_delta: bool = False
) -> str:
    """A table of one row per key and one column per run (``headers``); with
    ``with_delta``, each run's difference from the first (numbers only)."""
    table = []
    for key, values in rows:
        row = {"": key}
        for position, (header, value) in enumerate(zip(headers, values, strict=True)):
            row[header] = metric(value) if with_delta else shown(value)
            if with_delta and position > 0:
                row[f"Δ {header}"] = _delta(values[0], value)
        table.append(row)
    return text_table(table) if table else "  (none)"


def _delta(first: Any, other: Any) -> str:
    numbers = [v for v in (first, other) if isinstance(v, int | float) and not math.isnan(v)]
    return f"{other - first:+.4f}" if len(numbers) == 2 else ""
