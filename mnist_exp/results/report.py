"""What a person looks at after a run: test-set scores, per-class report and figures.

Everything here works on NumPy arrays (labels, predicted probabilities, images), so a
training run and a later ``evaluate`` of a logged model produce the very same report.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from mnist_exp.results.metric_names import TEST_ACCURACY, TEST_F1, TEST_LOSS

EPSILON = 1e-7  # Keras clips probabilities the same way in its cross-entropy
MISCLASSIFIED_SHOWN = 25


@dataclass(frozen=True)
class ClassificationReport:
    """Scores of one model on one labelled test set."""

    labels: np.ndarray  # true class per sample
    probabilities: np.ndarray  # (n, classes)
    class_names: list[str]

    @property
    def predictions(self) -> np.ndarray:
        """The predicted class per sample."""
        return self.probabilities.argmax(axis=1)

    @property
    def accuracy(self) -> float:
        """Share of samples whose predicted class is the true one."""
        return float(np.mean(self.predictions == self.labels))

    @property
    def loss(self) -> float:
        """Mean sparse categorical cross-entropy."""
        picked = self.probabilities[np.arange(len(self.labels)), self.labels]
        return float(np.mean(-np.log(np.clip(picked, EPSILON, 1 - EPSILON))))

    def confusion_matrix(self) -> np.ndarray:
        """Counts: rows are true classes, columns predicted classes."""
        size = len(self.class_names)
        matrix = np.zeros((size, size), dtype=np.int64)
        np.add.at(matrix, (self.labels, self.predictions), 1)
        return matrix

    def per_class(self) -> dict[str, dict[str, float]]:
        """Precision, recall, F1 and support for each class."""
        matrix = self.confusion_matrix()
        hits = np.diag(matrix).astype(float)
        predicted, actual = matrix.sum(axis=0), matrix.sum(axis=1)
        precision = np.divide(hits, predicted, out=np.zeros_like(hits), where=predicted > 0)
        recall = np.divide(hits, actual, out=np.zeros_like(hits), where=actual > 0)
        total = precision + recall
        f1 = np.divide(2 * precision * recall, total, out=np.zeros_like(hits), where=total > 0)
        return {
            name: {
                "precision": float(precision[i]),
                "recall": float(recall[i]),
                "f1": float(f1[i]),
                "support": int(actual[i]),
            }
            for i, name in enumerate(self.class_names)
        }

    def metrics(self) -> dict[str, float]:
        """Test metrics for MLflow (see :mod:`mnist_exp.results.metric_names`): loss,
        accuracy and F1 per class, to 4 decimals for F1 and the loss (accuracy is exact)."""
        scores = {TEST_LOSS: round(self.loss, 4), TEST_ACCURACY: self.accuracy}
        for name, row in self.per_class().items():
            scores[f"{TEST_F1}{name}"] = round(row["f1"], 4)
        return scores

    def most_confident_mistakes(self, limit: int = MISCLASSIFIED_SHOWN) -> list[dict]:
        """The misclassified samples the model was surest about, most confident first."""
        wrong = np.flatnonzero(self.predictions != self.labels)
        confidence = self.probabilities[wrong, self.predictions[wrong]]
        order = wrong[np.argsort(-confidence, kind="stable")][:limit]
        return [
            {
                "index": int(i),
                "true": self.class_names[self.labels[i]],
                "predicted": self.class_names[self.predictions[i]],
                "probability": float(self.probabilities[i, self.predictions[i]]),
            }
            for i in order
        ]

    def table(self) -> str:
        """Per-class precision/recall/F1 as an aligned text table."""
        width = max(5, *map(len, self.class_names))
        lines = [f"{'class':<{width}}  precision  recall  f1      support"]
        for name, row in self.per_class().items():
            lines.append(
                f"{name:<{width}}  {row['precision']:<9.4f}  {row['recall']:<6.4f}  "
                f"{row['f1']:<6.4f}  {row['support']}"
            )
        return "\n".join(lines)


def write_report(
    report: ClassificationReport, images: np.ndarray, folder: Path, history: dict | None = None
) -> list[Path]:
    """Write the JSON reports and PNG figures into ``folder``; return the files written."""
    folder.mkdir(parents=True, exist_ok=True)
    mistakes = report.most_confident_mistakes()
    documents = {
        "classification_report.json": {
            "accuracy": report.accuracy,
            "loss": report.loss,
            "samples": len(report.labels),
            "classes": report.per_class(),
        },
        "confusion_matrix.json": {
            "class_names": report.class_names,
            "matrix": report.confusion_matrix().tolist(),
        },
        "misclassified.json": mistakes,
    }
    written = []
    for name, document in documents.items():
        path = folder / name
        path.write_text(json.dumps(document, indent=2) + "\n")
        written.append(path)
    from mnist_exp.results import figures

    written.append(figures.confusion_matrix(report, folder / "confusion_matrix.png"))
    written.append(figures.misclassified(mistakes, images, folder / "misclassified.png"))
    if history is not None:
        written.append(figures.learning_curves(history, folder / "learning_curves.png"))
    return written
