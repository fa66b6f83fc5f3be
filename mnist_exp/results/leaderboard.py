"""A sweep's results as tables: ranked runs, failures, and seed-averaged configs."""

from __future__ import annotations

import csv
import io
import math
import statistics
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class JobResult:
    """One child run of a sweep, reduced to what the leaderboard shows."""

    run_id: str
    status: str
    params: dict[str, str]
    val_accuracy: float | None
    test_accuracy: float | None
    error: str | None = None
    pruned: bool = False  # stopped early by the study's pruner (the run itself FINISHED)
    name: str = ""  # the run's name: what its sweep varied (see pipeline.sweep.job_run_name)


@dataclass(frozen=True)
class Leaderboard:
    """Finished runs ranked by validation accuracy, the pruned and the failed ones, and
    the swept keys."""

    ranked: list[JobResult]
    pruned: list[JobResult]  # finished early by the study's pruner: listed, never ranked
    failed: list[JobResult]
    swept: list[str]

    @property
    def best(self) -> JobResult | None:
        """The run with the highest validation accuracy, if any finished."""
        return self.ranked[0] if self.ranked else None

    @classmethod
    def from_results(cls, results: list[JobResult]) -> Leaderboard:
        """Rank finished runs (best validation accuracy first); a pruned trial's run is
        listed apart (its accuracy is from an early epoch); keys that vary are 'swept'."""
        finished = [r for r in results if r.status == "FINISHED" and r.val_accuracy is not None]
        pruned = [r for r in finished if r.pruned]
        ranked = sorted((r for r in finished if not r.pruned), key=lambda r: -r.val_accuracy)
        failed = [r for r in results if r not in finished]
        keys = sorted({key for r in results for key in r.params})
        swept = [k for k in keys if len({r.params.get(k) for r in results}) > 1]
        return cls(ranked=ranked, pruned=pruned, failed=failed, swept=swept)

    def names_distinct(self) -> bool:
        """Whether every run has a name of its own (not when ``tracking.run_name`` named
        them all, or for runs from before sweeps named their jobs)."""
        names = [r.name for r in [*self.ranked, *self.pruned, *self.failed]]
        return all(names) and len(set(names)) == len(names)

    def rows(self, params: bool = True) -> list[dict[str, str]]:
        """One row per run (ranked, then pruned, then failed), as strings, for every table
        format; with a column per swept key if ``params`` (the run's name says the same
        in fewer characters: the terminal leaves them out)."""
        rows = []
        for rank, result in enumerate(self.ranked, start=1):
            rows.append(self._row(result, str(rank), "*" if rank == 1 else "", params))
        rows.extend(self._row(result, "-", "PRUNED", params) for result in self.pruned)
        rows.extend(self._row(result, "-", result.status, params) for result in self.failed)
        return rows

    def _row(self, result: JobResult, rank: str, mark: str, params: bool) -> dict[str, str]:
        swept = self.swept if params else []
        return {
            "rank": rank,
            "best": mark,
            "run": result.name,
            **{key: short_number(result.params.get(key, "")) for key in swept},
            "val_accuracy": _fmt(result.val_accuracy),
            "test_accuracy": _fmt(result.test_accuracy),
            "run_id": result.run_id,
            "error": result.error or "",
        }

    def seed_groups(self) -> list[dict[str, str]]:
        """Per config (swept keys other than ``seed``) over its seeds: mean ± std accuracy."""
        if "seed" not in self.swept:
            return []
        config_keys = [key for key in self.swept if key != "seed"]
        groups: dict[tuple, list[JobResult]] = {}
        for result in self.ranked:
            groups.setdefault(tuple(result.params.get(k) for k in config_keys), []).append(result)
        rows = []
        for values, members in groups.items():
            test = [m.test_accuracy for m in members]
            val = [m.val_accuracy for m in members]
            rows.append(
                {
                    **{
                        key: short_number(value or "")
                        for key, value in zip(config_keys, values, strict=True)
                    },
                    "seeds": str(len(members)),
                    "val_accuracy": _mean_std(val),
                    "test_accuracy": _mean_std(test),
                }
            )
        return sorted(rows, key=lambda row: row["val_accuracy"], reverse=True)


def short_number(param: str, digits: int = 4) -> str:
    """A param value for people: a fraction cut to ``digits`` significant digits; whole
    numbers and anything else as they are."""
    try:
        number = float(param)
    except ValueError:
        return param
    return param if number.is_integer() else f"{number:.{digits}g}"


def _fmt(value: float | None) -> str:
    return "" if value is None or math.isnan(value) else f"{value:.4f}"


def _mean_std(values: list[float]) -> str:
    spread = statistics.stdev(values) if len(values) > 1 else 0.0
    return f"{statistics.fmean(values):.4f} ± {spread:.4f}"


def text_table(rows: list[dict[str, str]]) -> str:
    """Rows as an aligned plain-text table for the terminal."""
    if not rows:
        return "(no runs)"
    columns = [c for c in rows[0] if any(row[c] for row in rows)]
    widths = {c: max(len(c), *(len(row[c]) for row in rows)) for c in columns}
    lines = ["  ".join(c.ljust(widths[c]) for c in columns)]
    lines += ["  ".join(row[c].ljust(widths[c]) for c in columns) for row in rows]
    return "\n".join(line.rstrip() for line in lines)


def markdown_table(rows: list[dict[str, str]]) -> str:
    """Rows as a Markdown table."""
    if not rows:
        return "(no runs)\n"
    columns = list(rows[0])
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(row[c].replace("|", "\\|") for c in columns) + " |" for row in rows]
    return "\n".join(lines) + "\n"


def csv_table(rows: list[dict[str, str]]) -> str:
    """Rows as CSV text."""
    buffer = io.StringIO()
    if rows:
        writer = csv.DictWriter(buffer, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    return buffer.getvalue()


def write_leaderboard(board: Leaderboard, folder: Path) -> None:
    """Write the sweep's tables and figure into ``folder``: ``leaderboard.csv``,
    ``leaderboard.md`` (with the mean ± std over seeds, if seeds were swept) and
    ``objective_vs_params.png``."""
    from mnist_exp.results.figures import objective_by_param

    rows = board.rows()
    (folder / "leaderboard.csv").write_text(csv_table(rows))
    markdown = markdown_table(rows)
    if groups := board.seed_groups():
        markdown += "\n## Mean ± std over seeds\n\n" + markdown_table(groups)
    (folder / "leaderboard.md").write_text(markdown)
    objective_by_param(board, folder / "objective_vs_params.png")
