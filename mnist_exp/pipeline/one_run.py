"""One training run, start to finish: model, training, test report and its MLflow record."""

from __future__ import annotations

import shlex
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

import keras
from omegaconf import DictConfig

from mnist_exp.data.splits import Splits
from mnist_exp.interrupts import RunInterrupted
from mnist_exp.pipeline.evaluation import score_test_set
from mnist_exp.pipeline.rerun import announce_rerun, metrics_comparison
from mnist_exp.pipeline.sweep import (
    JOB_NUM_TAG,
    PARAM_COUNT_KEYS,
    SweepContext,
    config_digest,
    job_run_name,
    override_value,
)
from mnist_exp.results.metric_names import OBJECTIVE, TIME
from mnist_exp.results.summary import job_summary, run_summary
from mnist_exp.tracking.provenance import source_provenance
from mnist_exp.tracking.recorder import RunRecorder, note_and_tags
from mnist_exp.tracking.run_details import RunDetails
from mnist_exp.tracking.store import DEFAULT_STORE, ui_hint
from mnist_exp.tracking.sweep_record import DIGEST_TAG, TRIAL_STATE_TAG
from mnist_exp.training.checkpoint import (
    Checkpoint,
    checkpoint_folder,
    checkpoint_writer,
    saved_epoch,
)
from mnist_exp.training.fit import EpochMetricsCallback, FitResult, StopWhenTold, fit
from mnist_exp.training.model import build_for_training, parameter_counts
from mnist_exp.training.runtime import Runtime, prepare_runtime


@dataclass(frozen=True)
class JobInfo:
    """What the launcher knows about this job (Hydra fills it; tests may leave it empty)."""

    overrides: list[str] = field(default_factory=list)
    sweep: str | None = None  # the sweep's folder, when this job is part of a multirun
    job_num: int | None = None
    output_dir: str | None = None
    parallel_jobs: int = 1  # jobs running at once on this machine (joblib or Ray launcher)
    rerun_of: RunDetails | None = None  # the recorded run this one reruns (rerun=)
    context: SweepContext = field(default_factory=SweepContext)  # its sweep's, in a sweep
    started_at: float = field(default_factory=time.perf_counter)  # see job_clock
    # When the launcher handed the job over: a sweep job's run starts then, after its
    # sweep's parent run (a process's first job started before, at the launch).
    handed_over_at: float = field(default_factory=time.perf_counter)
    finish_in_background: bool = False  # a sweep job in the launching process


def run_one(
    cfg: DictConfig, splits: Splits, job: JobInfo, resume_from: Checkpoint | None = None
) -> float:
    """Train and evaluate the configured model on ``splits``, record it as one MLflow run,
    print its summary and return the validation accuracy (the objective sweepers maximise).

    With ``resume_from``, the interrupted run is reopened (its params stay as logged) and
    training continues from the checkpoint's epoch.
    """
    run_name = cfg.tracking.run_name or job_run_name(job.overrides, job.job_num, job.context)
    with _recorded_run(cfg, splits, job, run_name, resume_from) as recorder:
        try:
            runtime = prepare_runtime(cfg.train, cfg.seed, job.parallel_jobs)
            recorder.set_tags(runtime.tags())
            if job.rerun_of is not None:
                announce_rerun(job.rerun_of, splits, runtime)
            if resume_from is None:
                model = _new_model(cfg, splits, job, runtime, recorder)
            else:
                model = _resumed_model(resume_from, cfg.train.epochs, recorder)
            fitted, fit_seconds = _train(model, cfg, splits, job, recorder, resume_from)
        except KeyboardInterrupt:
            if job.sweep:
                raise  # the sweep says how to continue (the same command again)
            raise RunInterrupted(_resume_hint(cfg, job, recorder.run_id, resume_from)) from None
        report = score_test_set(model, splits)
        if job.finish_in_background:
            recorder.hand_over()
        recorder.log_report(report, splits.x_test, fitted.history)
        registered = None
        if cfg.tracking.log_model:
            # In a sweep, the sweep registers its best child instead of every job.
            registered = recorder.log_model(model, None if job.sweep else cfg.tracking.register_as)
        recorder.log_overhead(job.started_at, fit_seconds)
    if job.sweep:
        print(job_summary(report, fitted, f"sweep job {job.job_num} ({run_name})", recorder.run_id))
    else:
        ui = ui_hint(cfg.tracking.uri, recorder.experiment_id, recorder.run_id, indent=15)
        summary = run_summary(
            report, fitted, splits, recorder.run_id, cfg.tracking.experiment, ui, registered
        )
        print(summary)
        if job.rerun_of is not None:
            now = {**report.metrics(), OBJECTIVE: fitted.val_accuracy}
            print(f"rerun          {metrics_comparison(job.rerun_of.metrics, now)}")
    return fitted.val_accuracy


def _resume_hint(cfg: DictConfig, job: JobInfo, run_id: str, resume_from: Checkpoint | None) -> str:
    """What an interrupted single run tells the user: the run, how far it got, and the
    command that continues it (when it has a checkpoint to continue from)."""
    folder = resume_from.folder if resume_from else None
    if folder is None and job.output_dir and cfg.train.checkpoint:
        folder = checkpoint_folder(job.output_dir)
    done = saved_epoch(folder) if folder is not None else None
    if not done:
        why = "checkpoints are off (train.checkpoint)" if folder is None else "no epoch ended"
        return f"run {run_id} was marked KILLED; {why}, so start it again to train it"
    command = f"python -m mnist_exp.run resume={run_id}"
    if cfg.tracking.uri != DEFAULT_STORE:
        command += f" {shlex.quote(f'tracking.uri={override_value(str(cfg.tracking.uri))}')}"
    return (
        f"run {run_id} was marked KILLED after epoch {done} of {cfg.train.epochs}; "
        f"continue it with: {command}"
    )


@contextmanager
def _recorded_run(
    cfg: DictConfig,
    splits: Splits,
    job: JobInfo,
    run_name: str | None,
    resume_from: Checkpoint | None,
) -> Iterator[RunRecorder]:
    """The interrupted run reopened, or a new run named ``run_name`` (or a readable random
    name) with its tags and dataset inputs (a child of its sweep's parent run in a
    sweep)."""
    if resume_from is not None:
        with RunRecorder.resume(cfg.tracking, resume_from.run_id) as recorder:
            yield recorder
        return
    parent_run_id = job.context.parent_run() if job.sweep else None
    with RunRecorder.start(
        cfg.tracking,
        run_name,
        _tags(cfg, splits, job),
        parent_run_id,
        job.handed_over_at if job.sweep else job.started_at,
    ) as recorder:
        recorder.log_datasets(splits)
        recorder.log_provenance(source_provenance())
        yield recorder


def _new_model(
    cfg: DictConfig, splits: Splits, job: JobInfo, runtime: Runtime, recorder: RunRecorder
) -> keras.Model:
    """Build and compile the configured model; log the config as it runs and the model's
    summary."""
    model = build_for_training(cfg, splits)
    counts = dict(zip(PARAM_COUNT_KEYS, parameter_counts(model), strict=True))
    recorder.log_config(cfg, job.overrides, runtime.settings_that_ran(cfg.train, model), counts)
    recorder.log_model_summary(model)
    return model


def _resumed_model(resume_from: Checkpoint, epochs: int, recorder: RunRecorder) -> keras.Model:
    """The checkpointed model, the run tagged with the epoch it resumes after (and the
    user told so)."""
    print(f"resuming run {recorder.run_id} from epoch {resume_from.epoch + 1} of {epochs}")
    model = resume_from.restore_model()
    recorder.set_tags({"resumed_after_epoch": str(resume_from.epoch)})
    return model


def _train(
    model: keras.Model,
    cfg: DictConfig,
    splits: Splits,
    job: JobInfo,
    recorder: RunRecorder,
    resume_from: Checkpoint | None,
) -> tuple[FitResult, float]:
    """Fit, logging every epoch's metrics and checkpointing after it (if on and there is a
    folder for it); log the objective and where the time went. Returns the fit and its
    seconds."""
    if resume_from is not None:
        folder = resume_from.folder
    else:
        folder = checkpoint_folder(job.output_dir) if job.output_dir else None
    checkpoint = None
    if cfg.train.checkpoint and folder is not None:
        checkpoint = checkpoint_writer(model, folder, lambda: recorder.run_id, resume_from)
    clock = EpochMetricsCallback(
        recorder.log_epoch,
        log_learning_rate=cfg.optimizer.schedule != "constant",
        write_with=checkpoint,  # logged and checkpointed together, or neither
    )
    # MLflow's work (importing it, opening the run) starts with training, beside it.
    started = keras.callbacks.LambdaCallback(
        on_train_begin=lambda logs: recorder.training_started()
    )
    callbacks: list[keras.callbacks.Callback] = [clock, started]
    pruning = _trial_pruning(job.context) if job.sweep else None
    if pruning is not None:
        callbacks.append(pruning)
    fitted = fit(model, splits, cfg.train, callbacks, cfg.seed, resume_from)
    timings = clock.timings(job.started_at)
    logged = {f"{TIME}{name}": seconds for name, seconds in timings.items()}
    recorder.log_metrics({**logged, OBJECTIVE: fitted.val_accuracy})
    if pruning is not None and pruning.stopped_after is not None:
        recorder.set_tags({TRIAL_STATE_TAG: "PRUNED"})  # the run itself ends FINISHED
    return fitted, timings["fit_seconds"]


def _trial_pruning(context: SweepContext) -> StopWhenTold | None:
    """In an Optuna trial's job: the callback that reports each epoch to the study and
    stops a trial its pruner prunes (Optuna is imported only then)."""
    if context.trial is None:
        return None
    from mnist_exp.pipeline.search import trial_pruning

    should_stop = trial_pruning(context)
    return None if should_stop is None else StopWhenTold(should_stop)


def _tags(cfg: DictConfig, splits: Splits, job: JobInfo) -> dict[str, str]:
    """A new run's tags: the user's note and tags (``tracking.note``, ``tracking.tags``),
    the run it reruns, its data, code version (git), sweep (and the digest of its config, by
    which a continued sweep finds it), output folder and Ray node."""
    tags = {**note_and_tags(cfg.tracking), **splits.tags(), **_ray_tags()}
    tags.update(source_provenance().tags)
    if cfg.rerun:
        tags["rerun_of"] = cfg.rerun
    if job.sweep:
        tags["sweep"] = job.sweep
        tags[JOB_NUM_TAG] = str(job.job_num)
        tags[DIGEST_TAG] = config_digest(cfg)
        if job.context.trial is not None:
            tags["sweep.trial"] = job.context.trial
    if job.output_dir:
        tags["output_dir"] = job.output_dir
    return tags


def _ray_tags() -> dict[str, str]:
    """The Ray node, when a Ray worker runs the job (the host is tagged with the run's
    owner, see :mod:`mnist_exp.tracking.owner`)."""
    ray = sys.modules.get("ray")
    if ray is not None and ray.is_initialized():
        return {"ray.node_id": ray.get_runtime_context().get_node_id()}
    return {}
