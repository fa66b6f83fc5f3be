"""Which data a run saw: each split as an MLflow dataset input with its content digest.

The digest is :func:`mnist_exp.data.splits.content_digest` of the split's exact pixels and
labels (MLflow's own numpy digest hashes only the first 10,000 values), so two runs on
the same data show the same digests in the UI and runs on different data never do. The
offline fallback is named as such, so it cannot pass for full MNIST. The run's recorder
(:meth:`mnist_exp.tracking.recorder.RunRecorder.log_datasets`) logs them.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import mlflow
from mlflow.data.code_dataset_source import CodeDatasetSource
from mlflow.data.dataset import Dataset
from mlflow.data.dataset_source_registry import resolve_dataset_source

from mnist_exp.data.splits import Splits

CONTEXTS = {"train": "training", "val": "validation", "test": "test"}


def dataset_inputs(splits: Splits, which: tuple[str, ...]) -> list[tuple[Dataset, str]]:
    """The splits named in ``which`` as MLflow datasets, each with its input context."""
    if Path(splits.source).exists():
        with warnings.catch_warnings():
            # MLflow registers its local-file source twice (for "" and "file:") and warns
            # that a path matches both; either is the same class.
            warnings.simplefilter("ignore", UserWarning)
            source = resolve_dataset_source(splits.source)
    else:
        source = CodeDatasetSource({"loader": splits.source})
    inputs = []
    for split in which:
        images, labels = splits.split(split)
        dataset = mlflow.data.from_numpy(
            images,
            source=source,
            targets=labels,
            name=dataset_name(splits),
            digest=splits.digests[split],
        )
        inputs.append((dataset, CONTEXTS[split]))
    return inputs


def dataset_name(splits: Splits) -> str:
    """The name a split is logged under: the dataset's, the offline fallback named so."""
    return splits.name if splits.variant != "offline_subset" else f"{splits.name} (offline subset)"


def data_identity(splits: Splits) -> dict[str, tuple[str, str]]:
    """Each split as it is logged: input context -> (dataset name, content digest)."""
    return {
        context: (dataset_name(splits), splits.digests[split])
        for split, context in CONTEXTS.items()
    }
