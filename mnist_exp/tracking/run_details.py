"""Everything the store holds about one run, gathered for ``runs show``, ``runs diff`` and
``rerun=``: its config, final metrics, tags and note, data, code and environment.

:func:`run_details` reads one run and the two small artifacts that describe it: the
resolved ``config.yaml`` and ``environment/requirements.txt``. Runs logged before the
project used MLflow's git tags still show their commit (the old ``git_commit`` tag).
"""

from __future__ import annotations

import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from mnist_exp.results.metric_names import EPOCH
from mnist_exp.tracking.provenance import COMMIT_TAG, DIRTY_TAG, REQUIREMENTS_ARTIFACT
from mnist_exp.tracking.run_table import NOTE_TAG, PARENT_RUN_TAG, typed_param

if TYPE_CHECKING:
    from mlflow import MlflowClient
    from mlflow.entities import Run

CONFIG_ARTIFACT = "config.yaml"
COMMIT_TAGS = (COMMIT_TAG, "git_commit")  # MLflow's, then the one older runs of ours have
RUNTIME_TAGS = ("keras.backend", "device.kind", "device.name")
DATA_SIZE_PREFIX = "dataset."


@dataclass(frozen=True)
class DataUsed:
    """One dataset input of a run: which split, of what, and its content digest."""

    context: str  # training, validation, test
    name: str
    digest: str


@dataclass(frozen=True)
class RunDetails:
    """One run as ``runs show`` and ``runs diff`` present it."""

    run_id: str
    name: str
    status: str
    experiment_id: str
    start_time: int  # ms since the epoch
    end_time: int | None
    artifact_uri: str
    params: dict[str, object]  # typed (see run_table.typed_param)
    metrics: dict[str, float]  # final values (per-epoch curves left out)
    tags: dict[str, str]
    config_yaml: str | None  # the resolved config.yaml artifact, if logged
    data: list[DataUsed] = field(default_factory=list)
    versions: dict[str, str] = field(default_factory=dict)  # package -> version

    @property
    def note(self) -> str | None:
        """The run's description (``tracking.note``)."""
        return self.tags.get(NOTE_TAG)

    @property
    def sweep(self) -> str | None:
        """The run id of the sweep parent this run is a job of."""
        return self.tags.get(PARENT_RUN_TAG)

    @property
    def commit(self) -> str | None:
        """The git commit of the code that ran, with ``(dirty)`` when the tree had
        uncommitted changes."""
        commit = next((self.tags[t] for t in COMMIT_TAGS if t in self.tags), None)
        if commit is None:
            return None
        return f"{commit} (dirty)" if self.tags.get(DIRTY_TAG) == "true" else commit

    def provenance(self) -> dict[str, str]:
        """What made the run besides its config, each as one comparable value: commit,
        data digests per split, package versions, backend and device."""
        found: dict[str, str] = {"commit": self.commit or "unknown"}
        found |= {f"data ({d.context})": f"{d.name} {d.digest}" for d in self.data}
        found |= self.versions
        found |= {tag: self.tags[tag] for tag in RUNTIME_TAGS if tag in self.tags}
        return found


def run_details(client: MlflowClient, run: Run) -> RunDetails:
    """The details of ``run`` (read with ``client``, which downloads its two small
    artifacts; a missing one is None or empty)."""
    info, data = run.info, run.data
    return RunDetails(
        run_id=info.run_id,
        name=info.run_name or "",
        status=info.status,
        experiment_id=info.experiment_id,
        start_time=info.start_time,
        end_time=info.end_time,
        artifact_uri=info.artifact_uri,
        params={key: typed_param(value) for key, value in sorted(data.params.items())},
        metrics={k: v for k, v in sorted(data.metrics.items()) if not k.startswith(EPOCH)},
        tags=dict(data.tags),
        config_yaml=_artifact_text(client, info.run_id, CONFIG_ARTIFACT),
        data=_data_used(run),
        versions=parse_requirements(
            _artifact_text(client, info.run_id, REQUIREMENTS_ARTIFACT) or ""
        ),
    )


def parse_requirements(text: str) -> dict[str, str]:
    """``name==version`` lines as a mapping (comments and other lines skipped); the
    ``# python X.Y.Z`` comment as ``python``."""
    found = {}
    for line in text.splitlines():
        line = line.strip()
        if line.startswith("# python "):
            found["python"] = line.removeprefix("# python ").strip()
        elif "==" in line and not line.startswith("#"):
            name, version = line.split("==", 1)
            found[name.strip()] = version.strip()
    return found


def _data_used(run: Run) -> list[DataUsed]:
    inputs = run.inputs.dataset_inputs if run.inputs else []
    found = []
    for dataset_input in inputs:
        tags = {tag.key: tag.value for tag in dataset_input.tags}
        dataset = dataset_input.dataset
        found.append(DataUsed(tags.get("mlflow.data.context", ""), dataset.name, dataset.digest))
    return found


def _artifact_text(client: MlflowClient, run_id: str, path: str) -> str | None:
    """The text of the run's artifact ``path``, or None if it was not logged."""
    from mlflow.exceptions import MlflowException

    with tempfile.TemporaryDirectory() as folder:
        try:
            local = client.download_artifacts(run_id, path, folder)
        except (MlflowException, OSError):
            return None
        return Path(local).read_text(encoding="utf-8", errors="replace")
