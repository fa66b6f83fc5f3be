"""A run's MLflow record: :class:`RunRecorder` opens (or reopens) the run and writes all of
it, params and tags, the code's provenance, per-epoch metrics, dataset inputs, report
artifacts, the model and the run's end status, in the spirit of MLflow's own Keras callback
(and, with ``tracking.system_metrics``, MLflow's system-metrics monitor beside it); and the
store's experiment that runs go into."""

from __future__ import annotations

import json
import logging
import random
import tempfile
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import TYPE_CHECKING, Any

import mlflow
import numpy as np
from mlflow import MlflowClient
from mlflow.entities import Metric, RunStatus, RunTag
from mlflow.models import ModelSignature
from mlflow.types import Schema, TensorSpec
from omegaconf import DictConfig, ListConfig, OmegaConf

from mnist_exp.data.splits import IMAGE_PIXELS, Splits
from mnist_exp.errors import RunFailed
from mnist_exp.interrupts import deferred, raise_if_received
from mnist_exp.quiet import registry_notes_filtered
from mnist_exp.results.metric_names import epoch_metrics
from mnist_exp.results.report import ClassificationReport, write_report
from mnist_exp.tracking.lineage import dataset_inputs
from mnist_exp.tracking.owner import owner_tags
from mnist_exp.tracking.provenance import (
    DIFF_ARTIFACT,
    REQUIREMENTS_ARTIFACT,
    Provenance,
    pinned_versions,
)
from mnist_exp.tracking.run_table import NOTE_TAG
from mnist_exp.tracking.store import (
    GC_COMMAND,
    absolute_store_uri,
    store_errors,
    store_lock,
    store_problem,
)

if TYPE_CHECKING:
    import keras

# "Creating initial MLflow database tables..." on every new store is noise, not news; so is
# the traceback it logs for a database error that it raises anyway (see store_problem).
logging.getLogger("mlflow.store.db.utils").setLevel(logging.CRITICAL)
# The system-metrics monitor announces its start and stop (and a missing GPU) at INFO on
# every run that asks for it; its warnings and errors still show.
logging.getLogger("mlflow.system_metrics").setLevel(logging.WARNING)


# A model-training experiment, for MLflow UIs that read the kind from the experiment (3.17
# takes it from the link instead: see tracking.store.TRAINING_VIEW).
EXPERIMENT_TAGS = {"mlflow.experimentKind": "custom_model_development"}

# MLflow's system-metrics monitor (tracking.system_metrics): a sample of CPU, memory, disk,
# network (and GPU) every second, each a step of its own (none averaged with the next), so a
# 10-second run has about ten.
SYSTEM_METRICS_INTERVAL_S = 1
SYSTEM_METRICS_SAMPLES_PER_LOG = 1


def open_experiment(tracking_cfg: DictConfig) -> str:
    """Point MLflow at the configured store and return the experiment id, creating it once.

    A new SQLite store is created (and an old one checked) under the store's lock, so any
    number of processes can start at once. A store that cannot be used raises
    :class:`~mnist_exp.tracking.store.StoreError` (one line naming it).
    """
    uri = absolute_store_uri(tracking_cfg.uri)
    with store_errors(uri), store_lock(uri):
        mlflow.set_tracking_uri(uri)
        experiment = mlflow.get_experiment_by_name(tracking_cfg.experiment)
        if experiment is not None:
            return experiment.experiment_id
        artifacts = tracking_cfg.artifact_location
        if artifacts is not None:
            artifacts = Path(artifacts).resolve().as_uri()
        try:
            return mlflow.create_experiment(tracking_cfg.experiment, artifacts, EXPERIMENT_TAGS)
        except mlflow.exceptions.MlflowException:
            # Another job (or a server's other client) created it since our lookup.
            return mlflow.get_experiment_by_name(tracking_cfg.experiment).experiment_id


class StoreFailed(RunFailed):
    """The store (or the disk under it) failed while a run was under way."""

    reason = "store_failed"


@contextmanager
def _tracked_run(
    experiment_id: str,
    run_name: str | None,
    tags: dict[str, str],
    parent_run_id: str | None = None,
    run_id: str | None = None,
    system_metrics: bool = False,
) -> Iterator[mlflow.ActiveRun]:
    """Start an MLflow run (or reopen ``run_id``), owned by this process, that always ends:
    FINISHED, FAILED (error tagged) or KILLED.

    Whatever failed first, the run is ended FAILED whenever the store can still write. A
    store or disk failure becomes :class:`StoreFailed` (one line); if even the run's end
    could not be stored, its message says so and how to close the run later.

    With ``system_metrics``, MLflow's monitor samples the machine while the run is open;
    ending the run stops it and logs its last samples (its thread is a daemon: it never
    holds up the process's exit).
    """
    uri = mlflow.get_tracking_uri()
    if system_metrics:
        # Read by the monitor that start_run creates (process-wide settings).
        mlflow.set_system_metrics_sampling_interval(SYSTEM_METRICS_INTERVAL_S)
        mlflow.set_system_metrics_samples_before_logging(SYSTEM_METRICS_SAMPLES_PER_LOG)
    with deferred(), store_errors(uri):
        run = mlflow.start_run(
            run_id=run_id,
            experiment_id=experiment_id,
            run_name=run_name,
            tags={**tags, **owner_tags()},
            parent_run_id=parent_run_id,
            log_system_metrics=system_metrics,
        )
        if run_id is not None:
            mlflow.set_tags(owner_tags())  # a resumed run has a new owner
    try:
        yield run
        raise_if_received()  # an interrupt some library swallowed: the run did not finish
    except KeyboardInterrupt:
        _end_run(RunStatus.KILLED)
        raise
    except BaseException as error:
        problem = store_problem(error, uri)
        # The reason tagged is the one the user is told: a store failure, or the error's own.
        reason = StoreFailed.reason if problem else getattr(error, "reason", "exception")
        ended = _end_run(RunStatus.FAILED, error, reason)
        if problem is None and ended:
            raise
        raise StoreFailed(_with_close_hint(problem or str(error), run, ended)) from error
    if not _end_run(RunStatus.FINISHED):
        raise StoreFailed(_with_close_hint("cannot record the run's end", run, ended=False))


def _end_run(status: int, error: BaseException | None = None, reason: str = "") -> bool:
    """End the active run with ``status``, tagging ``error`` and its ``reason`` first if
    given; return whether the store took the end. Nothing here may raise: the run's own
    error matters. (``mlflow.end_run`` takes the run off MLflow's stack of active runs
    before it writes the end, so a failed write leaves nothing for MLflow's exit hook.)"""
    with deferred():
        if error is not None:
            with suppress(Exception):
                mlflow.set_tags(
                    {
                        "error": f"{type(error).__name__}: {error}"[:5000],
                        "failure_reason": reason,
                    }
                )
        try:
            mlflow.end_run(RunStatus.to_string(status))
            return True
        except Exception:
            return False


def _with_close_hint(problem: str, run: mlflow.ActiveRun, ended: bool) -> str:
    if ended:
        return problem
    return (
        f"{problem}; run {run.info.run_id} may still show RUNNING: once the store can "
        f"write again, close it with {GC_COMMAND}"
    )


def flatten(cfg: DictConfig, prefix: str = "") -> dict[str, Any]:
    """The config as dotted keys (``model.hidden_units``), lists kept as one value."""
    flat: dict[str, Any] = {}
    for key, value in cfg.items():
        full_key = f"{prefix}{key}"
        if isinstance(value, DictConfig):
            flat.update(flatten(value, prefix=f"{full_key}."))
        else:
            flat[full_key] = (
                OmegaConf.to_container(value) if isinstance(value, ListConfig) else value
            )
    return flat


def as_typed(value: Any) -> str:
    """A param value written as a person types it in YAML or an override: ``null``,
    ``true``, ``[512, 256]``, ``0.001``, ``adam`` (MLflow would store Python's ``str()``:
    ``None``, ``True``)."""
    if isinstance(value, str):
        return value
    return json.dumps(value, default=str)


def readable_name() -> str:
    """A run name like MLflow's own (``bustling-seal-758``), drawn from the system's
    randomness. MLflow draws its names from Python's ``random``, which every run seeds
    with its ``seed``: runs with one seed would all get the same name."""
    from mlflow.utils import name_utils

    draw = random.SystemRandom()
    predicate = draw.choice(name_utils._GENERATOR_PREDICATES).lower()
    noun = draw.choice(name_utils._GENERATOR_NOUNS).lower()
    return f"{predicate}-{noun}-{draw.randint(0, 999)}"


def note_and_tags(tracking_cfg: DictConfig) -> dict[str, str]:
    """The tags a user asks for on a run (and a sweep's parent): ``tracking.tags`` as they
    are, and ``tracking.note`` as the run's description (``mlflow.note.content``)."""
    # .get: a tracking section built by hand, not from the schema, may leave them out.
    tags = {str(key): str(value) for key, value in (tracking_cfg.get("tags") or {}).items()}
    note = tracking_cfg.get("note")
    if note:
        tags[NOTE_TAG] = str(note)
    return tags


def model_signature(num_classes: int) -> ModelSignature:
    """Input: float32 rows of 784 pixels in [0, 1]; output: one probability per class."""
    return ModelSignature(
        inputs=Schema([TensorSpec(np.dtype(np.float32), (-1, IMAGE_PIXELS))]),
        outputs=Schema([TensorSpec(np.dtype(np.float32), (-1, num_classes))]),
    )


def model_requirements() -> list[str]:
    """Pinned pip requirements of a logged model: what loading it needs.

    Stated instead of letting MLflow infer them, which costs about 5 s per model.
    """
    return pinned_versions((("keras",), ("tensorflow-cpu", "tensorflow"), ("numpy",)))


def _system_metrics(tracking_cfg: DictConfig) -> bool:
    """Whether ``tracking.system_metrics`` is on (off in a tracking section built by hand,
    not from the schema)."""
    return bool(tracking_cfg.get("system_metrics", False))


CONFIGURED = ".configured"  # suffix of the param that keeps a setting's configured value
DATASET_LOG_ATTEMPTS = 3


class RunRecorder:
    """Everything one MLflow run records, written only through this object.

    Open it with :meth:`start` (a new run) or :meth:`resume` (an interrupted one); either
    ends the run FINISHED, FAILED (error tagged) or KILLED when its block ends, and turns a
    store failure into :class:`StoreFailed`. In between, a run logs in this order: tags and
    dataset inputs (:meth:`log_datasets`), its code's provenance (:meth:`log_provenance`),
    its config as params (:meth:`log_config`) and model summary, a metric batch per epoch
    (:meth:`log_epoch`), final metrics, the test report (:meth:`log_report`) and the model
    (:meth:`log_model`).
    """

    def __init__(self, run_id: str, experiment_id: str) -> None:
        self.run_id = run_id
        self.experiment_id = experiment_id

    @classmethod
    @contextmanager
    def start(
        cls,
        tracking_cfg: DictConfig,
        run_name: str | None = None,
        tags: Mapping[str, str] | None = None,
        parent_run_id: str | None = None,
    ) -> Iterator[RunRecorder]:
        """A new run in the configured store and experiment, tagged ``tags`` (and with its
        owner, see :mod:`mnist_exp.tracking.owner`), a child of ``parent_run_id`` if given,
        its system metrics recorded if ``tracking.system_metrics`` is on."""
        experiment_id = open_experiment(tracking_cfg)
        name = run_name or readable_name()
        with _tracked_run(
            experiment_id,
            name,
            dict(tags or {}),
            parent_run_id,
            system_metrics=_system_metrics(tracking_cfg),
        ) as run:
            yield cls(run.info.run_id, experiment_id)

    @classmethod
    @contextmanager
    def resume(cls, tracking_cfg: DictConfig, run_id: str) -> Iterator[RunRecorder]:
        """The interrupted run ``run_id`` reopened, now owned by this process; its params
        stay as they were logged. With ``tracking.system_metrics`` on, its system metrics
        continue after the steps it has."""
        experiment_id = open_experiment(tracking_cfg)
        with _tracked_run(
            experiment_id, None, {}, run_id=run_id, system_metrics=_system_metrics(tracking_cfg)
        ) as run:
            yield cls(run.info.run_id, experiment_id)

    def set_tags(self, tags: Mapping[str, str]) -> None:
        """Tag the run (a tag set again takes the new value)."""
        mlflow.set_tags(dict(tags))

    def log_datasets(
        self, splits: Splits, which: tuple[str, ...] = ("train", "val", "test")
    ) -> None:
        """Log the splits named in ``which`` as the run's dataset inputs, with their content
        digests (:mod:`mnist_exp.tracking.lineage`)."""
        inputs = dataset_inputs(splits, which)
        datasets = [dataset for dataset, _ in inputs]
        contexts = [context for _, context in inputs]
        for attempt in range(DATASET_LOG_ATTEMPTS):
            try:
                mlflow.log_inputs(datasets, contexts=contexts, tags_list=[None] * len(inputs))
                return
            except mlflow.exceptions.MlflowException:
                # Parallel jobs on the same data race to create the same dataset record
                # (a unique-constraint error in MLflow's SQL store); once one has created
                # it, the others just link to it.
                if attempt == DATASET_LOG_ATTEMPTS - 1:
                    raise

    def log_config(
        self,
        cfg: DictConfig,
        overrides: list[str],
        ran: Mapping[str, Any],
        derived: Mapping[str, Any],
    ) -> None:
        """Log the flattened config as params, each with the value that ran, plus the
        resolved YAML and the overrides as artifacts.

        ``ran`` holds the settings that code resolved before training (an ``auto``, a
        capped number), keyed like the flattened config: each is logged as it ran, and its
        configured value beside it as ``<key>.configured`` (what a sweep varied, what the
        UI filters on). ``derived`` adds params computed from the config (parameter counts).
        """
        params = flatten(cfg)
        configured = {f"{key}{CONFIGURED}": params[key] for key in ran}
        logged = {**params, **ran, **configured, **derived}
        mlflow.log_params({key: as_typed(value) for key, value in logged.items()})
        mlflow.log_text(OmegaConf.to_yaml(cfg), "config.yaml")
        mlflow.log_text(OmegaConf.to_yaml(ListConfig(overrides)), "overrides.yaml")

    def log_provenance(self, provenance: Provenance) -> None:
        """Log the installed versions of the stack (``environment/requirements.txt``) and,
        if the code's git tree was dirty, its uncommitted diff (``code/git.diff``). The
        provenance's tags go on the run as it starts (see
        :mod:`mnist_exp.tracking.provenance`)."""
        mlflow.log_text(provenance.requirements, REQUIREMENTS_ARTIFACT)
        if provenance.diff is not None:
            mlflow.log_text(provenance.diff, DIFF_ARTIFACT)

    def log_model_summary(self, model: keras.Model) -> None:
        """Log the Keras model summary as ``model_summary.txt``."""
        lines: list[str] = []
        model.summary(print_fn=lambda line, **_: lines.append(line))
        mlflow.log_text("\n".join(lines), "model_summary.txt")

    def log_epoch(self, metrics: dict[str, float], step: int) -> None:
        """Log one epoch's metrics at ``step`` (as ``epoch/<name>``) and tag it as the last
        completed epoch, in one write that Ctrl-C cannot cut short."""
        now = int(time.time() * 1000)
        named = epoch_metrics(metrics)
        with deferred():
            MlflowClient().log_batch(
                self.run_id,
                metrics=[Metric(name, value, now, step) for name, value in named.items()],
                tags=[RunTag("last_completed_epoch", str(step))],
            )

    def log_metrics(self, metrics: Mapping[str, float]) -> None:
        """Log metrics that have one value per run (no step)."""
        mlflow.log_metrics(dict(metrics))

    def log_report(
        self,
        report: ClassificationReport,
        images: np.ndarray,
        history: dict[str, list[float]] | None = None,
    ) -> None:
        """Log the test report's metrics, and its JSON and figures (PNG) under the run's
        ``report/`` folder; learning curves too if the training ``history`` is given."""
        mlflow.log_metrics(report.metrics())
        with tempfile.TemporaryDirectory() as folder:
            write_report(report, images, Path(folder), history)
            with deferred():
                mlflow.log_artifacts(folder, "report")

    def log_model(self, model: keras.Model, register_as: str | None = None) -> str | None:
        """Log the model in MLflow's Keras flavor with its signature (``model``), and
        register it as a new version of ``register_as`` in the Model Registry if set;
        return that version as ``name/version`` (None if not registered)."""
        with deferred(), registry_notes_filtered():
            info = mlflow.keras.log_model(
                model,
                name="model",
                signature=model_signature(model.output_shape[-1]),
                pip_requirements=model_requirements(),
                registered_model_name=register_as,
            )
        version = info.registered_model_version
        return f"{register_as}/{version}" if register_as and version is not None else None
