"""A run's MLflow record: :class:`RunRecorder` opens (or reopens) the run and writes all of
it, params and tags, the code's provenance, per-epoch metrics, dataset inputs, report
artifacts, the model and the run's end status, in the spirit of MLflow's own Keras callback
(and, with ``tracking.system_metrics``, MLflow's system-metrics monitor beside it); and the
store's experiment that runs go into.

The writes run on a thread of the run's own (:class:`~mnist_exp.tracking.run_writer.RunWriter`),
in order: MLflow is imported and the run opened while the model builds and trains, and
only an epoch's metrics (and whatever asks for a result) wait for the store.
"""

from __future__ import annotations

import json
import logging
import random
import tempfile
import time
from collections.abc import Callable, Iterator, Mapping
from concurrent.futures import Future
from contextlib import contextmanager, suppress
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from omegaconf import DictConfig, ListConfig, OmegaConf

from mnist_exp.data.splits import IMAGE_PIXELS, Splits
from mnist_exp.errors import RunFailed
from mnist_exp.interrupts import deferred, raise_if_received
from mnist_exp.quiet import registry_notes_filtered
from mnist_exp.results.metric_names import TIME, epoch_metrics
from mnist_exp.results.report import ClassificationReport, write_report
from mnist_exp.tracking.owner import owner_tags
from mnist_exp.tracking.provenance import (
    DIFF_ARTIFACT,
    REQUIREMENTS_ARTIFACT,
    Provenance,
    pinned_versions,
)
from mnist_exp.tracking.run_table import NOTE_TAG
from mnist_exp.tracking.run_writer import (
    RunWriter,
    after_next_training_starts,
    finish_later,
    note_training_started,
)
from mnist_exp.tracking.store import (
    GC_COMMAND,
    absolute_store_uri,
    store_errors,
    store_lock,
    store_problem,
)

if TYPE_CHECKING:
    import keras
    import mlflow
    from mlflow.models import ModelSignature

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
    import mlflow

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
    started_ms: int | None = None,
) -> Iterator[mlflow.ActiveRun]:
    """Start an MLflow run (or reopen ``run_id``), owned by this process, that always ends:
    FINISHED, FAILED (error tagged) or KILLED. A new run starts at ``started_ms`` (ms since
    the epoch; default now): when its job started, which may be before its record opens.

    Whatever failed first, the run is ended FAILED whenever the store can still write. A
    store or disk failure becomes :class:`StoreFailed` (one line); if even the run's end
    could not be stored, its message says so and how to close the run later.

    With ``system_metrics``, MLflow's monitor samples the machine while the run is open;
    ending the run stops it and logs its last samples (its thread is a daemon: it never
    holds up the process's exit).
    """
    import mlflow
    from mlflow.entities import RunStatus

    uri = mlflow.get_tracking_uri()
    if system_metrics:
        # Read by the monitor that start_run creates (process-wide settings).
        mlflow.set_system_metrics_sampling_interval(SYSTEM_METRICS_INTERVAL_S)
        mlflow.set_system_metrics_samples_before_logging(SYSTEM_METRICS_SAMPLES_PER_LOG)
    with deferred(), store_errors(uri):
        resumed = run_id is not None
        if not resumed:  # created with its start time, then made this thread's active run
            tags = {**tags, **owner_tags()}
            run_id = _created_run(experiment_id, run_name, tags, parent_run_id, started_ms)
        run = mlflow.start_run(run_id=run_id, log_system_metrics=system_metrics)
        if resumed:
            mlflow.set_tags(owner_tags())  # a resumed run has a new owner
    try:
        yield run
        raise_if_received()  # an interrupt some library swallowed: the run did not finish
    except KeyboardInterrupt:
        _end_run(RunStatus.to_string(RunStatus.KILLED))
        raise
    except BaseException as error:
        problem = store_problem(error, uri)
        # The reason tagged is the one the user is told: a store failure, or the error's own.
        reason = StoreFailed.reason if problem else getattr(error, "reason", "exception")
        ended = _end_run(RunStatus.to_string(RunStatus.FAILED), error, reason)
        if problem is None and ended:
            raise
        raise StoreFailed(_with_close_hint(problem or str(error), run, ended)) from error
    if not _end_run(RunStatus.to_string(RunStatus.FINISHED)):
        raise StoreFailed(_with_close_hint("cannot record the run's end", run, ended=False))


def _created_run(
    experiment_id: str,
    run_name: str | None,
    tags: dict[str, str],
    parent_run_id: str | None,
    started_ms: int | None,
) -> str:
    """Create a run in ``experiment_id`` that started at ``started_ms`` (None: now), with
    ``tags`` and those MLflow puts on a run it starts itself (source, user, git), a child
    of ``parent_run_id`` if given; return its id."""
    from mlflow import MlflowClient
    from mlflow.tracking.context.registry import resolve_tags

    if parent_run_id is not None:
        tags = {**tags, "mlflow.parentRunId": parent_run_id}
    created = MlflowClient().create_run(
        experiment_id, start_time=started_ms, tags=resolve_tags(tags), run_name=run_name
    )
    return created.info.run_id


def _end_run(status: str, error: BaseException | None = None, reason: str = "") -> bool:
    """End the active run with ``status``, tagging ``error`` and its ``reason`` first if
    given; return whether the store took the end. Nothing here may raise: the run's own
    error matters. (``mlflow.end_run`` takes the run off MLflow's stack of active runs
    before it writes the end, so a failed write leaves nothing for MLflow's exit hook.)"""
    import mlflow

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
            mlflow.end_run(status)
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
    from mlflow.models import ModelSignature
    from mlflow.types import Schema, TensorSpec

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

    Writes go to the run's own thread in that order, from :meth:`training_started` on (or
    from the first thing that waits: :meth:`log_epoch`, :attr:`run_id`, a registration,
    the block's end); the block's end waits for them all, unless the run was handed over
    (:meth:`hand_over`: a sweep job, whose report, model and end are written
    while the next job starts, and the sweep waits for them before its leaderboard).
    """

    def __init__(self, writer: RunWriter, opened: Future) -> None:
        self._writer = writer
        self._opened = opened  # the run's context, run id and experiment id, once open
        self._handed_over_at: float | None = None  # see hand_over

    @property
    def run_id(self) -> str:
        """The run's id (waits until the run is open)."""
        return self._opened_run()[1]

    @property
    def experiment_id(self) -> str:
        """The id of the run's experiment (waits until the run is open)."""
        return self._opened_run()[2]

    def _opened_run(self) -> tuple[Any, str, str]:
        self._writer.start()
        with deferred():
            error = self._opened.exception()
        if error is not None:
            raise error
        return self._opened.result()

    @classmethod
    @contextmanager
    def start(
        cls,
        tracking_cfg: DictConfig,
        run_name: str | None = None,
        tags: Mapping[str, str] | None = None,
        parent_run_id: str | Callable[[], str] | None = None,
        started_at: float | None = None,
    ) -> Iterator[RunRecorder]:
        """A new run in the configured store and experiment, tagged ``tags`` (and with its
        owner, see :mod:`mnist_exp.tracking.owner`), a child of ``parent_run_id`` if given
        (a function: called as the run opens, it returns the id), its system metrics
        recorded if ``tracking.system_metrics`` is on. Its start time is ``started_at`` (a
        ``time.perf_counter()`` reading: when its job started) or now, though its record
        opens only once training starts (or something waits)."""
        started_ms = None
        if started_at is not None:
            started_ms = int((time.time() - (time.perf_counter() - started_at)) * 1000)
        with cls._opened_by(
            tracking_cfg, run_name, dict(tags or {}), parent_run_id, started_ms=started_ms
        ) as recorder:
            yield recorder

    @classmethod
    @contextmanager
    def resume(cls, tracking_cfg: DictConfig, run_id: str) -> Iterator[RunRecorder]:
        """The interrupted run ``run_id`` reopened, now owned by this process; its params
        stay as they were logged. With ``tracking.system_metrics`` on, its system metrics
        continue after the steps it has."""
        with cls._opened_by(tracking_cfg, None, {}, run_id=run_id) as recorder:
            yield recorder

    @classmethod
    @contextmanager
    def _opened_by(
        cls,
        tracking_cfg: DictConfig,
        name: str | None,
        tags: dict[str, str],
        parent_run_id: str | Callable[[], str] | None = None,
        run_id: str | None = None,
        started_ms: int | None = None,
    ) -> Iterator[RunRecorder]:
        """Open the run on its writer thread (not waiting for it) and end it there when
        the block ends, as :func:`_tracked_run` does, raising what the end raises. The
        writes wait for training to start (:meth:`training_started`), unless system
        metrics are on: then the run is open before the block starts, so that their monitor
        samples the whole job."""
        monitored = _system_metrics(tracking_cfg)
        writer = RunWriter(held=not monitored)
        opened = writer.post(_open_run, tracking_cfg, name, tags, parent_run_id, run_id, started_ms)
        recorder = cls(writer, opened)
        try:
            if monitored:
                recorder._opened_run()
            yield recorder
            raise_if_received()  # an interrupt some library swallowed: not finished
        except BaseException as error:
            ended_with = _waited(writer.close(partial(_end, opened, error)))
            if ended_with is None or ended_with is error:
                raise
            raise ended_with from error
        ending = writer.close(partial(_end, opened, None))
        if recorder._handed_over_at is not None and not opened.exception():
            finish_later(ending, recorder.run_id, f"run {recorder.run_id}")
        elif (error := _waited(ending)) is not None:
            raise error

    def set_tags(self, tags: Mapping[str, str]) -> None:
        """Tag the run (a tag set again takes the new value)."""
        self._writer.post(_set_tags, dict(tags))

    def log_datasets(
        self, splits: Splits, which: tuple[str, ...] = ("train", "val", "test")
    ) -> None:
        """Log the splits named in ``which`` as the run's dataset inputs, with their content
        digests (:mod:`mnist_exp.tracking.lineage`)."""
        self._writer.post(_log_datasets, splits, which)

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
        texts = {
            "config.yaml": OmegaConf.to_yaml(cfg),
            "overrides.yaml": OmegaConf.to_yaml(ListConfig(overrides)),
        }
        self._writer.post(
            _log_params_and_texts, {key: as_typed(value) for key, value in logged.items()}, texts
        )

    def log_provenance(self, provenance: Provenance) -> None:
        """Log the installed versions of the stack (``environment/requirements.txt``) and,
        if the code's git tree was dirty, its uncommitted diff (``code/git.diff``). The
        provenance's tags go on the run as it starts (see
        :mod:`mnist_exp.tracking.provenance`)."""
        texts = {REQUIREMENTS_ARTIFACT: provenance.requirements}
        if provenance.diff is not None:
            texts[DIFF_ARTIFACT] = provenance.diff
        self._writer.post(_log_params_and_texts, {}, texts)

    def log_model_summary(self, model: keras.Model) -> None:
        """Log the Keras model summary as ``model_summary.txt``."""
        lines: list[str] = []
        model.summary(print_fn=lambda line, **_: lines.append(line))
        self._writer.post(_log_params_and_texts, {}, {"model_summary.txt": "\n".join(lines)})

    def log_epoch(self, metrics: dict[str, float], step: int) -> None:
        """Log one epoch's metrics at ``step`` (as ``epoch/<name>``) and tag it as the last
        completed epoch, in one write that Ctrl-C cannot cut short; wait until it is
        written (and the run open)."""
        now = int(time.time() * 1000)
        with deferred():
            self._writer.call(_log_epoch, self._opened, epoch_metrics(metrics), step, now)

    def log_metrics(self, metrics: Mapping[str, float]) -> None:
        """Log metrics that have one value per run (no step)."""
        self._writer.post(_log_metrics, dict(metrics))

    def log_overhead(self, job_started_at: float, fit_seconds: float) -> None:
        """Log ``time/overhead_seconds``: the job's time outside training, from
        ``job_started_at`` (a ``time.perf_counter()``) to when the run was handed over
        (:meth:`hand_over`), or else to when this write runs, after every write before it,
        less ``fit_seconds``."""
        handed_over_at = self._handed_over_at

        def write() -> None:
            ended = handed_over_at if handed_over_at is not None else time.perf_counter()
            seconds = round(ended - job_started_at - fit_seconds, 4)
            _log_metrics({f"{TIME}overhead_seconds": seconds})

        self._writer.post(write)

    def training_started(self) -> None:
        """Training began: open the run and write what was asked for so far, from now on
        in the background (until then, MLflow is not even imported, so start-up keeps the
        interpreter), and let an earlier sweep job's handed-over writes go ahead."""
        self._writer.start()
        note_training_started()

    def hand_over(self) -> None:
        """Let the rest of this run (a sweep job's report, model and end) be written in the
        background once the next job of this process trains, rather than wait for it
        when the block ends; :func:`~mnist_exp.tracking.run_writer.finish_pending` waits
        for it. The job's time outside training is counted to now (:meth:`log_overhead`)."""
        self._handed_over_at = time.perf_counter()
        self._writer.post(after_next_training_starts())

    def log_report(
        self,
        report: ClassificationReport,
        images: np.ndarray,
        history: dict[str, list[float]] | None = None,
    ) -> None:
        """Log the test report's metrics, and its JSON and figures (PNG) under the run's
        ``report/`` folder; learning curves too if the training ``history`` is given."""
        self._writer.post(_log_report, report, images, history)

    def log_model(self, model: keras.Model, register_as: str | None = None) -> str | None:
        """Log the model in MLflow's Keras flavor with its signature (``model``), and
        register it as a new version of ``register_as`` in the Model Registry if set
        (waiting for it); return that version as ``name/version`` (None if not
        registered)."""
        if register_as is None:
            self._writer.post(_log_model, model, None)
            return None
        with deferred():
            return self._writer.call(_log_model, model, register_as)


def _waited(future: Future) -> BaseException | None:
    """Wait for ``future`` with interrupts held; the exception it ended with, if any."""
    with deferred():
        return future.exception()


def _open_run(
    tracking_cfg: DictConfig,
    name: str | None,
    tags: dict[str, str],
    parent_run_id: str | Callable[[], str] | None,
    run_id: str | None,
    started_ms: int | None,
) -> tuple[Any, str, str]:
    """Open the run (on the writer's thread): its :func:`_tracked_run` context, entered,
    with the run's id and its experiment's. A new run without a ``name`` gets a readable
    one."""
    if run_id is None and not name:
        name = readable_name()
    if callable(parent_run_id):
        parent_run_id = parent_run_id()  # a sweep's parent, created on demand: first
    experiment_id = open_experiment(tracking_cfg)
    context = _tracked_run(
        experiment_id,
        name,
        tags,
        parent_run_id,
        run_id=run_id,
        system_metrics=_system_metrics(tracking_cfg),
        started_ms=started_ms,
    )
    run = context.__enter__()
    return context, run.info.run_id, experiment_id


def _end(opened: Future, error: BaseException | None, failed: BaseException | None) -> None:
    """End the run (on the writer's thread) as :func:`_tracked_run` does for the block's
    ``error`` or, failing that, a write that ``failed``; raise what that raises. A run
    that never opened raises why."""
    if opened.exception() is not None:
        raise opened.exception()
    context = opened.result()[0]
    first = error if isinstance(error, KeyboardInterrupt) else (failed or error)
    if first is None:
        context.__exit__(None, None, None)
    elif not context.__exit__(type(first), first, first.__traceback__):
        raise first


def _set_tags(tags: dict[str, str]) -> None:
    import mlflow

    mlflow.set_tags(tags)


def _log_metrics(metrics: dict[str, float]) -> None:
    import mlflow

    mlflow.log_metrics(metrics)


def _log_params_and_texts(params: dict[str, str], texts: dict[str, str]) -> None:
    import mlflow

    if params:
        mlflow.log_params(params)
    for name, text in texts.items():
        mlflow.log_text(text, name)


def _log_datasets(splits: Splits, which: tuple[str, ...]) -> None:
    import mlflow

    from mnist_exp.tracking.lineage import dataset_inputs

    inputs = dataset_inputs(splits, which)
    datasets = [dataset for dataset, _ in inputs]
    contexts = [context for _, context in inputs]
    for attempt in range(DATASET_LOG_ATTEMPTS):
        try:
            mlflow.log_inputs(datasets, contexts=contexts, tags_list=[None] * len(inputs))
            return
        except mlflow.exceptions.MlflowException:
            # Parallel jobs on the same data race to create the same dataset record (a
            # unique-constraint error in MLflow's SQL store); once one has created it, the
            # others just link to it.
            if attempt == DATASET_LOG_ATTEMPTS - 1:
                raise


def _log_epoch(opened: Future, named: dict[str, float], step: int, now: int) -> None:
    from mlflow import MlflowClient
    from mlflow.entities import Metric, RunTag

    MlflowClient().log_batch(
        opened.result()[1],
        metrics=[Metric(name, value, now, step) for name, value in named.items()],
        tags=[RunTag("last_completed_epoch", str(step))],
    )


def _log_report(
    report: ClassificationReport, images: np.ndarray, history: dict[str, list[float]] | None
) -> None:
    import mlflow

    mlflow.log_metrics(report.metrics())
    with tempfile.TemporaryDirectory() as folder:
        write_report(report, images, Path(folder), history)
        mlflow.log_artifacts(folder, "report")


def _log_model(model: keras.Model, register_as: str | None) -> str | None:
    import mlflow

    with registry_notes_filtered():
        info = mlflow.keras.log_model(
            model,
            name="model",
            signature=model_signature(model.output_shape[-1]),
            pip_requirements=model_requirements(),
            registered_model_name=register_as,
        )
    version = info.registered_model_version
    return f"{register_as}/{version}" if register_as and version is not None else None
