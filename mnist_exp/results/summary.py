"""What the commands print when they are done: a run's, an evaluation's and a sweep's
summary for the terminal."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

from mnist_exp.results.leaderboard import Leaderboard, text_table
from mnist_exp.results.report import ClassificationReport

if TYPE_CHECKING:
    from mnist_exp.data.splits import Splits
    from mnist_exp.training.fit import FitResult


def run_summary(
    report: ClassificationReport,
    fitted: FitResult,
    splits: Splits,
    run_id: str,
    experiment: str,
    ui_lines: list[str],
    registered: str | None = None,
) -> str:
    """A training run's end: the per-class table, the scores, the data it used, the MLflow
    run, the model version it was registered as (``name/version``, if it was) and the
    ``ui_lines`` that open it in the UI."""
    lines = [
        "",
        report.table(),
        "",
        f"test accuracy  {report.accuracy:.4f}   (test loss {report.loss:.4f}, "
        f"val accuracy {fitted.val_accuracy:.4f}, {count(fitted.epochs_run, 'epoch')})",
        f"data           {describe_data(splits)}",
        f"mlflow run     {run_id}   (experiment '{experiment}')",
    ]
    if registered:
        lines.append(f"registered     models:/{registered}")
    return "\n".join(lines + ui_lines)


def job_summary(report: ClassificationReport, fitted: FitResult, job: str, run_id: str) -> str:
    """A sweep job's end in one line (the sweep prints the tables): its scores and run."""
    return (
        f"{job}: test accuracy {report.accuracy:.4f}, val accuracy "
        f"{fitted.val_accuracy:.4f}, {count(fitted.epochs_run, 'epoch')}, run {run_id}"
    )


def count(number: int, noun: str) -> str:
    """``number`` and ``noun``, plural unless it is one: ``1 epoch``, ``3 epochs``."""
    return f"{number} {noun}" if number == 1 else f"{number} {noun}s"


def describe_data(splits: Splits) -> str:
    """Which data a run used, in words: the dataset, how much of it, and where from."""
    sizes = " / ".join(f"{size:,} {name}" for name, size in splits.sizes().items())
    return f"{splits.name}{_fallback(splits)}: {sizes} images from {splits.source}"


def _fallback(splits: Splits) -> str:
    """A loud note when the data is the offline subset that stood in for full MNIST."""
    return " (OFFLINE FALLBACK, not the full dataset)" if splits.variant == "offline_subset" else ""


def evaluation_summary(report: ClassificationReport, splits: Splits) -> str:
    """An evaluation's scores: the per-class table and the test accuracy, naming the data."""
    return (
        f"{report.table()}\n\n"
        f"test accuracy  {report.accuracy:.4f}   (test loss {report.loss:.4f}, "
        f"on the {len(splits.y_test):,} test images of {splits.name}{_fallback(splits)} "
        f"from {splits.source})"
    )


def evaluation_run_line(run_id: str) -> str:
    """The line naming the MLflow run an evaluation was recorded in."""
    return f"mlflow run     {run_id}   (report/ holds the figures and JSON)"


def sweep_summary(
    board: Leaderboard,
    sweep_dir: str,
    parent_id: str,
    registered: str | None,
    register_command: Callable[[str], str],
    ui_lines: list[str],
    skipped: int = 0,
) -> str:
    """A sweep's end: the leaderboard (and the seed averages), how many of the finished
    jobs were ``skipped`` (finished in an earlier run of the same sweep), the best run and
    either the model version it was registered as (``name/version``) or the command that
    registers it (``register_command(run_id)``), the parent run and the ``ui_lines`` that
    open the sweep in the UI."""
    reused = f" ({skipped} skipped: finished in an earlier run of this sweep)" if skipped else ""
    lines = [
        "",
        f"Sweep {sweep_dir}: {len(board.ranked)} finished{reused}, "
        + (f"{len(board.pruned)} pruned, " if board.pruned else "")
        + f"{len(board.failed)} failed; ranked by validation accuracy (* = best)",
        text_table(board.rows(params=not board.names_distinct())),
    ]
    if groups := board.seed_groups():
        lines += ["", "Mean ± std over seeds:", text_table(groups)]
    if board.best is not None:
        lines.append(f"\nbest run     {board.best.run_id} (tagged sweep.best=true)")
        if registered:
            lines.append(f"registered   models:/{registered}")
        else:
            lines.append(f"register it  {register_command(board.best.run_id)}")
    lines.append(
        f"parent run   {parent_id} (leaderboard.csv, leaderboard.md, objective_vs_params.png)"
    )
    return "\n".join(lines + ui_lines)
