"""Every PNG the project draws (matplotlib ``Figure`` objects rendered by Agg; pyplot,
with its global state and GUI machinery, is never imported)."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from matplotlib.figure import Figure

if TYPE_CHECKING:
    from mnist_exp.results.leaderboard import Leaderboard
    from mnist_exp.results.report import ClassificationReport

DPI = 110


def _save(figure: Figure, path: Path) -> Path:
    figure.tight_layout()
    figure.savefig(path, dpi=DPI)
    return path


def learning_curves(history: dict[str, list[float]], path: Path) -> Path:
    """Loss and accuracy per epoch, training against validation."""
    figure = Figure(figsize=(9, 3.6))
    axes = figure.subplots(1, 2)
    epochs = np.arange(1, len(history["loss"]) + 1)
    for axis, metric in zip(axes, ("loss", "accuracy"), strict=True):
        axis.plot(epochs, history[metric], marker="o", label="training")
        axis.plot(epochs, history[f"val_{metric}"], marker="o", label="validation")
        axis.set_xlabel("epoch")
        axis.set_ylabel(metric)
        axis.set_title(metric.capitalize())
        axis.grid(alpha=0.3)
        axis.legend()
        axis.xaxis.get_major_locator().set_params(integer=True)
    return _save(figure, path)


def confusion_matrix(report: ClassificationReport, path: Path) -> Path:
    """Test-set confusion matrix with counts in every cell."""
    matrix = report.confusion_matrix()
    names = report.class_names
    figure = Figure(figsize=(6.4, 5.6))
    axis = figure.subplots()
    shown = axis.imshow(matrix, cmap="Blues")
    figure.colorbar(shown, ax=axis, fraction=0.046)
    axis.set_xticks(range(len(names)), names, rotation=45 if max(map(len, names)) > 2 else 0)
    axis.set_yticks(range(len(names)), names)
    axis.set_xlabel("predicted")
    axis.set_ylabel("true")
    axis.set_title(f"Confusion matrix (test, n={matrix.sum()}, accuracy {report.accuracy:.4f})")
    threshold = matrix.max() / 2
    for (row, column), count in np.ndenumerate(matrix):
        axis.text(
            column,
            row,
            str(count),
            ha="center",
            va="center",
            fontsize=8,
            color="white" if count > threshold else "black",
        )
    return _save(figure, path)


def misclassified(mistakes: list[dict], images: np.ndarray, path: Path) -> Path:
    """A grid of the most confidently misclassified test digits with their labels.

    The digits are tiled into one image (one axis, not one per digit: ~8x faster)."""
    columns, side, gap = 5, 28, 12
    rows = max(1, -(-len(mistakes) // columns))
    tiles = np.zeros((rows * (side + gap), columns * (side + gap)), dtype=np.float32)
    figure = Figure(figsize=(columns * 1.7, rows * 1.95))
    axis = figure.subplots()
    for number, mistake in enumerate(mistakes):
        top, left = (number // columns) * (side + gap) + gap, (number % columns) * (side + gap)
        tiles[top : top + side, left : left + side] = images[mistake["index"]].reshape(side, side)
        axis.text(
            left + side / 2,
            top - 1,
            f"{mistake['true']} → {mistake['predicted']}\np={mistake['probability']:.2f}",
            ha="center",
            va="bottom",
            fontsize=7,
        )
    axis.imshow(tiles, cmap="gray_r", vmin=0, vmax=1)
    axis.axis("off")
    title = (
        "Most confident mistakes (test set): true → predicted"
        if mistakes
        else "No misclassified test images"
    )
    figure.suptitle(title)
    return _save(figure, path)


def objective_by_param(board: Leaderboard, path: Path) -> Path | None:
    """A sweep's validation accuracy against each swept key; None if nothing was swept."""
    if not board.swept or not board.ranked:
        return None
    figure = Figure(figsize=(4 * len(board.swept), 3.4))
    axes = figure.subplots(1, len(board.swept), squeeze=False)
    for axis, key in zip(axes[0], board.swept, strict=True):
        values = [r.params.get(key, "") for r in board.ranked]
        scores = [r.val_accuracy for r in board.ranked]
        try:
            positions = [float(v) for v in values]
            numeric = True
        except ValueError:
            categories = sorted(set(values))
            positions = [categories.index(v) for v in values]
            axis.set_xticks(range(len(categories)), categories, rotation=30, ha="right")
            numeric = False
        axis.scatter(positions, scores, color="tab:blue")
        axis.scatter(positions[:1], scores[:1], color="tab:red", label="best", zorder=3)
        if numeric and min(positions) > 0 and max(positions) / min(positions) >= 10:
            axis.set_xscale("log")
        axis.set_xlabel(key)
        axis.set_ylabel("validation accuracy")
        axis.grid(alpha=0.3)
    axes[0][0].legend(loc="best")
    figure.suptitle("Sweep objective by swept parameter")
    return _save(figure, path)
