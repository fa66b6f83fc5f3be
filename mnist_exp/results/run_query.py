"""Questions asked of a table of runs: which runs meet conditions, which config keys tell
them apart, and how a metric does per value of a key.

A condition reads ``KEY OP VALUE`` with OP one of ``= == != > >= < <=``:
``model.dropout=0.3``, ``model.hidden_units=[512,256]``, ``final/test_accuracy>0.97``,
``tags.idea=wd``. VALUE is read as a Hydra override value is (``0.3`` a float, ``[512,256]``
a list, ``null`` None, ``jax`` a string), and compared with the run's typed value; tag
values are text and are compared as text. Tables in, tables out: pandas, nothing from
MLflow.
"""

from __future__ import annotations

import math
import operator
import re
import statistics
from collections.abc import Iterable
from dataclasses import dataclass
from difflib import get_close_matches
from typing import TYPE_CHECKING, Any

from mnist_exp.config.schema import ConfigError

if TYPE_CHECKING:
    import pandas as pd

CONDITION = re.compile(r"^\s*([^=!<>\s]+)\s*(==|!=|>=|<=|=|>|<)\s*(.*?)\s*$")
ORDERING = {">": operator.gt, ">=": operator.ge, "<": operator.lt, "<=": operator.le}
# Keys that describe where or how a run was recorded, not what it trained: never picked as
# the keys that tell runs apart (they still can be named with --columns).
NOT_COMPARED = ("tracking.", "rerun", "resume", "sweep_fresh")
CONFIGURED = ".configured"  # the configured value beside one resolved as it ran


@dataclass(frozen=True)
class Condition:
    """One ``KEY OP VALUE`` test on a run's value, as typed."""

    key: str
    op: str
    text: str  # VALUE as written
    value: Any  # VALUE as typed

    def __str__(self) -> str:
        return f"{self.key}{self.op}{self.text}"

    def holds(self, actual: Any) -> bool:
        """Whether a run whose value is ``actual`` meets the condition."""
        if self.op in ORDERING:
            return _is_number(actual) and ORDERING[self.op](actual, self.value)
        same = _same(actual, self.value) or (isinstance(actual, str) and actual == self.text)
        return same if self.op in ("=", "==") else not same


def parse_conditions(texts: Iterable[str]) -> list[Condition]:
    """Each ``KEY OP VALUE`` text as a :class:`Condition`; ConfigError (one line) for a
    text that is not one, or an ordering whose value is not a number."""
    conditions = []
    for text in texts:
        match = CONDITION.match(text)
        if match is None:
            raise ConfigError(
                f"--where {text!r}: expected KEY=VALUE (or != > >= < <=), such as "
                "model.dropout=0.3 or final/test_accuracy>0.97"
            )
        key, op, raw = match.groups()
        value = parse_value(raw)
        if op in ORDERING and not _is_number(value):
            raise ConfigError(f"--where {text!r}: {op} compares numbers; {raw!r} is not one")
        conditions.append(Condition(key, op, raw, value))
    return conditions


def parse_value(text: str) -> Any:
    """``text`` typed as Hydra reads an override value (lists as tuples); text that Hydra
    would not read (``a b``) stays text."""
    from hydra.core.override_parser.overrides_parser import OverridesParser
    from hydra.errors import HydraException

    try:
        value = OverridesParser.create().parse_override(f"key={text}").value()
    except HydraException:
        return text
    return frozen(value)


def apply_conditions(frame: pd.DataFrame, conditions: list[Condition]) -> pd.DataFrame:
    """The rows of ``frame`` that meet every condition. A condition on a key no row has
    is a ConfigError that names the closest keys there are."""
    for condition in conditions:
        check_column(frame, condition.key, f"--where {condition}")
        keep = [condition.holds(value) for value in frame[condition.key]]
        frame = frame[keep]
    return frame.reset_index(drop=True)


def check_column(frame: pd.DataFrame, key: str, what: str) -> None:
    """ConfigError naming ``what`` when ``frame`` (of at least one run) has no ``key``."""
    if frame.empty or key in frame.columns:
        return
    near = get_close_matches(key, [str(c) for c in frame.columns], n=3, cutoff=0.5)
    hint = f"; did you mean {', '.join(near)}?" if near else ""
    raise ConfigError(f"{what}: no run has the key {key!r}{hint}")


def differing_keys(frame: pd.DataFrame, config_keys: Iterable[str]) -> list[str]:
    """Those of ``config_keys`` whose values are not the same in every row (a missing value
    counts as one), leaving out where runs were recorded (``tracking.*``) and configured
    values that only repeat a resolved one."""
    keys = [
        key
        for key in config_keys
        if not key.startswith(NOT_COMPARED) and len({_hashable(v) for v in frame[key]}) > 1
    ]
    return [k for k in keys if not (k.endswith(CONFIGURED) and k.removesuffix(CONFIGURED) in keys)]


def group_runs(frame: pd.DataFrame, key: str, metrics: list[str]) -> pd.DataFrame:
    """One row per value of ``key``: the value, how many runs have it, and the mean and
    standard deviation (``<metric> mean``, ``<metric> std``; 0 for one run) of each of
    ``metrics`` over them; best mean of the first metric first."""
    import pandas as pd

    check_column(frame, key, f"--group-by {key}")
    groups: dict[Any, list[int]] = {}
    for position, value in enumerate(frame[key]):
        groups.setdefault(_hashable(value), []).append(position)
    rows = []
    for value, positions in groups.items():
        row: dict[str, Any] = {key: value, "runs": len(positions)}
        for metric in metrics:
            column = frame[metric].iloc[positions] if metric in frame else []
            values = [float(v) for v in column if _is_number(v) and not math.isnan(v)]
            row[f"{metric} mean"] = statistics.fmean(values) if values else math.nan
            spread = statistics.stdev(values) if len(values) > 1 else 0.0
            row[f"{metric} std"] = spread if values else math.nan
        rows.append(row)
    table = pd.DataFrame(rows)
    if metrics and not table.empty:
        table = table.sort_values(f"{metrics[0]} mean", ascending=False, na_position="last")
    return table.reset_index(drop=True)


def sort_runs(frame: pd.DataFrame, key: str, ascending: bool = False) -> pd.DataFrame:
    """The rows sorted by ``key`` (highest first unless ``ascending``); runs without a
    value last."""
    check_column(frame, key, f"--sort {key}")
    return frame.sort_values(
        key, ascending=ascending, na_position="last", key=_as_numbers
    ).reset_index(drop=True)


def _as_numbers(column: pd.Series) -> pd.Series:
    """A column as floats for sorting: anything but a number (text, a list, None) as NaN."""
    return column.map(lambda v: v if _is_number(v) and not math.isnan(v) else math.nan).astype(
        float
    )


def _same(actual: Any, expected: Any) -> bool:
    if _is_number(actual) and _is_number(expected):
        return math.isclose(actual, expected, rel_tol=1e-9, abs_tol=0.0)
    return _hashable(actual) == expected


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _hashable(value: Any) -> Any:
    """A value as a set member: lists as tuples, NaN as None (missing)."""
    if isinstance(value, float) and math.isnan(value):
        return None
    return frozen(value)


def frozen(value: Any) -> Any:
    """Lists (nested too) as tuples: hashable and comparable; anything else as it is."""
    return tuple(frozen(v) for v in value) if isinstance(value, list | tuple) else value
