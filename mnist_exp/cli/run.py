"""Command-line entry point: ``python -m mnist_exp.run [overrides]`` (``-m`` for sweeps).

Thin on purpose: Hydra composes the config, :func:`mnist_exp.config.schema.validate` checks it,
:func:`mnist_exp.data.splits.load_data` loads the data and
:func:`mnist_exp.pipeline.one_run.run_one` does the work. TensorFlow and MLflow are
imported only once a run really starts, so ``--help`` and ``--cfg job`` answer at once.
"""

from __future__ import annotations

import os
import sys
import time
from concurrent.futures import ThreadPoolExecutor

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig

from mnist_exp import interrupts
from mnist_exp.cli.common import run_hydra_command
from mnist_exp.config.schema import ConfigError, validate
from mnist_exp.data.splits import load_data, split_data
from mnist_exp.errors import EXIT_RUN_FAILED, RunFailed, exit_with_error
from mnist_exp.job_clock import job_started_at
from mnist_exp.pipeline.resume import load_resume
from mnist_exp.pipeline.sweep import SweepContext, finished_job, in_launching_process
from mnist_exp.tracking.preflight import check_model_fits, check_store
from mnist_exp.tracking.run_writer import finish_pending
from mnist_exp.tracking.sweep_record import end_open_sweeps
from mnist_exp.training.devices import select_backend
from mnist_exp.training.keras_import import import_keras


@hydra.main(version_base="1.3", config_path="pkg://mnist_exp.conf", config_name="config")
def task(cfg: DictConfig) -> float:
    """Hydra's task function: validate the composed config, run it, return the objective.

    In a continued grid sweep, a job whose config already finished returns that run's
    objective without training. A config or data error ends the process with one line and
    exit code 2 (in a sweep too: every job would hit it). A known failure (such as a
    diverged loss) ends a single run with one line and exit code 1. In a sweep, any
    failure of a job is recorded on its FAILED run and returned as NaN, which sweepers
    count as a failed trial.
    """
    started_at = job_started_at()  # the process's launch, for its first job
    handed_over_at = time.perf_counter()
    interrupts.install()  # again: a joblib worker process runs only this function
    hydra_cfg = HydraConfig.get()
    in_sweep = hydra_cfg.mode == RunMode.MULTIRUN
    try:
        return _run(cfg, hydra_cfg, in_sweep, started_at, handed_over_at)
    except ConfigError as error:
        exit_with_error(str(error))
    except Exception as error:
        if not in_sweep and not isinstance(error, RunFailed | MemoryError):
            raise  # a bug: show the whole traceback
        where = f"sweep job {hydra_cfg.job.num}" if in_sweep else "the run"
        message = f"{where} failed ({_reason(error)}): {error}"
        if not in_sweep:
            exit_with_error(message, EXIT_RUN_FAILED)
        print(f"error: {message}", file=sys.stderr)
        return float("nan")


def _reason(error: Exception) -> str:
    return getattr(error, "reason", type(error).__name__)


def _run(
    cfg: DictConfig,
    hydra_cfg: DictConfig,
    in_sweep: bool,
    started_at: float,
    handed_over_at: float,
) -> float:
    typed = validate(cfg)
    check_store(typed.tracking.uri)
    resume_from = None
    if typed.resume is not None:
        others = [o for o in hydra_cfg.overrides.task if not o.startswith(("resume=", "tracking."))]
        if in_sweep or others:
            raise ConfigError(
                "resume: give it alone (tracking.* aside): the run continues with its own config"
            )
        typed, resume_from = load_resume(typed.resume, typed.tracking.uri)
    rerun_of = None
    if typed.rerun is not None:  # never in a sweep: the sweep callback refuses it
        from mnist_exp.pipeline.rerun import load_rerun

        typed, rerun_of = load_rerun(typed.rerun, typed, list(hydra_cfg.overrides.task))
    # A sweep's jobs learn their sweep from their environment (hydra.job.env_set): read once.
    context = SweepContext.from_environment(os.environ) if in_sweep else SweepContext()
    if in_sweep and (done := finished_job(typed, context)) is not None:
        run_id, objective = done  # a continued sweep: this config finished already
        print(f"sweep job {hydra_cfg.job.num}: skipped, run {run_id} finished this config")
        return objective
    check_model_fits(typed.model, num_classes=len(typed.data.class_names))
    parallel_jobs = _parallel_jobs(hydra_cfg) if in_sweep else 1
    loaded = load_data(typed.data, typed.seed)  # a data error stops here, before Keras
    select_backend(typed.train, typed.model.type, typed.data.augment, parallel_jobs)
    with ThreadPoolExecutor(max_workers=1) as splitter:
        # The data is split and scaled (NumPy, outside the GIL) while Keras imports.
        splitting = splitter.submit(
            split_data, loaded, typed.data, typed.train.validation_split, typed.seed
        )
        import_keras()
        splits = splitting.result()
    # Keras's backend and MLflow load only now that config and data are known to be good.
    from mnist_exp.pipeline.one_run import JobInfo, run_one

    job = JobInfo(
        overrides=list(hydra_cfg.overrides.task),
        sweep=hydra_cfg.sweep.dir if in_sweep else None,
        job_num=hydra_cfg.job.num if in_sweep else None,
        output_dir=hydra_cfg.runtime.output_dir,
        parallel_jobs=parallel_jobs,
        rerun_of=rerun_of,
        context=context,
        started_at=started_at,
        handed_over_at=handed_over_at,
        # Only the launching process waits for its jobs' last writes before the leaderboard.
        finish_in_background=in_sweep and in_launching_process(),
    )
    return run_one(typed, splits, job, resume_from)


def _parallel_jobs(hydra_cfg: DictConfig) -> int:
    """How many jobs the launcher runs at once on this machine: joblib's n_jobs (-1: one
    per core), or for Ray the cores over the cores each task reserves (num_cpus)."""
    cores = os.cpu_count() or 1
    launcher = hydra_cfg.launcher
    if "ray" in launcher:
        cores_per_job = launcher.ray.get("remote", {}).get("num_cpus") or 1
        return max(1, cores // cores_per_job)
    n_jobs = launcher.get("n_jobs") or 1
    return cores if n_jobs < 0 else n_jobs


def _end_sweeps(status: str) -> None:
    """End the parent runs of a sweep that did not finish (a finished sweep has closed
    its own); after an interrupt, say how to continue it."""
    finish_pending()  # the jobs' records first: no child is left RUNNING
    ended = end_open_sweeps(status)
    if ended and status == "KILLED":
        print(
            f"interrupted: sweep parent run {', '.join(ended)} marked KILLED; run the same "
            "command again (without sweep_fresh=true) to continue it: finished jobs are "
            "skipped, a study resumes",
            file=sys.stderr,
        )


def main() -> None:
    """Run the CLI: one-line config errors (exit 2), Ctrl-C leaves nothing RUNNING."""
    run_hydra_command(task, cleanup=_end_sweeps, config_name="config")
