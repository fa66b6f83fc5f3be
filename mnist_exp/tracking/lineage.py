"""Record which data a run saw: each split as an MLflow dataset input with its digest.

The digest is :func:`mnist_exp.data.splits.content_digest` of the split's exact pixels and
labels (MLflow's own numpy digest hashes only the first 10,000 values), so two runs on
the same data show the same digests in the UI and runs on different data never do. The
offline fallback is named as such, so it cannot pass for full MNIST.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import mlflow
from mlflow.data.code_dataset_source import CodeDatasetSource
from mlflow.data.dataset_source_registry import resolve_dataset_source

from mnist_exp.data.splits import Splits

CONTEXTS = {"train": "training", "val": "validation", "test": "test"}


def log_datasets(splits: Splits, which: tuple[str, ...] = ("train", "val", "test")) -> None:
    """Log the splits named in ``which`` as inputs of the active run."""
    if Path(splits.source).exists():
        with warnings.catch_warnings():
            # MLflow registers its local-file source twice (for "" and "file:") and warns
            # that a path matches both; either is the same class.
            warnings.simplefilter("ignore", UserWarning)
            source = resolve_dataset_source(splits.source)
    else:
        source = CodeDatasetSource({"loader": splits.source})
    name = splits.name if splits.variant != "offline_subset" else f"{splits.name} (offline subset)"
    datasets = []
    for split in which:
        images, labels = splits.split(split)
        datasets.append(
            mlflow.data.from_numpy(
                images, source=source, targets=labels, name=name, digest=splits.digests[split]
            )
        )
    contexts = [CONTEXTS[split] for split in which]
    for attempt in range(3):
        try:
            mlflow.log_inputs(datasets, contexts=contexts, tags_list=[None] * len(which))
            return
        except mlflow.exceptions.MlflowException:
            # Parallel jobs on the same data race to create the same dataset record
            # (a unique-constraint error in MLflow's SQL store); once one has created
            # it, the others just link to it.
            if attempt == 2:
                raise
