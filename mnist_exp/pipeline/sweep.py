"""A sweep as one MLflow group: a parent run per multirun, its leaderboard, its best child.

:class:`SweepCallback` is a Hydra callback (see ``hydra.callbacks`` in ``conf/config.yaml``).
In the launching process, before any job starts, it validates every job of a grid sweep,
creates the experiment (so that parallel jobs never race to create the SQLite store) and
the parent run. Each job gets the parent's run id (an id that cannot collide, unlike a
folder named by the time) through its environment and logs as a child. A new grid sweep
whose jobs run one by one in the launching process leaves the experiment and the parent
to its first job, which creates them as its training starts
(:class:`~mnist_exp.tracking.sweep_record.ParentOnDemand`): no MLflow before then. When the
sweep ends, the callback ranks the children, prints the leaderboard, logs it to the parent
and tags the best child. The parent run's record is
:class:`mnist_exp.tracking.sweep_record.SweepRecorder`'s; MLflow is imported only when a
sweep really runs.

Progress: as each job ends, where it ran (the launching process with the basic launcher,
a worker with joblib or Ray: the callback travels there with what it learnt before the
jobs started), the callback reads the parent's children from the store and prints how
many of the sweep's jobs are done, the time elapsed and still needed, and the best
objective so far (:mod:`mnist_exp.results.progress`). The launching process keeps that
line live at the bottom of a terminal; a worker, or output that is not a terminal, gets a
plain line per job.

Resuming a grid sweep: the parent of a basic-sweeper sweep is tagged with the sweep's
fingerprint (:func:`sweep_fingerprint`). Run again with the same overrides, the callback
reopens the latest parent with that fingerprint (unless ``sweep_fresh=true``) and tells the
jobs so; each job then looks for a FINISHED child with its config's digest
(:func:`config_digest`, tagged on every child) before it loads data or Keras, and returns
that child's validation accuracy instead of training again (:func:`finished_job`). Jobs
missing, FAILED or KILLED run again.
"""

from __future__ import annotations

import copy
import hashlib
import itertools
import json
import os
import re
import shutil
import sys
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from functools import partial
from typing import TYPE_CHECKING, Any

from hydra.experimental.callback import Callback
from omegaconf import DictConfig, OmegaConf, read_write

from mnist_exp.config.schema import ConfigError, validate
from mnist_exp.errors import exit_with_error
from mnist_exp.results.leaderboard import Leaderboard, short_number
from mnist_exp.results.metric_names import OBJECTIVE, read
from mnist_exp.results.progress import LiveLine, SweepProgress, progress_line
from mnist_exp.results.summary import sweep_summary
from mnist_exp.tracking.preflight import check_store
from mnist_exp.tracking.run_writer import finish_pending, finishing_runs
from mnist_exp.tracking.store import ui_hint
from mnist_exp.tracking.sweep_record import (
    TRIAL_STATE_TAG,
    ParentOnDemand,
    SweepRecorder,
    end_open_sweeps,
    finished_child,
    open_on_demand,
    open_sweeps,
    parent_on_demand_id,
    register_command,
)

if TYPE_CHECKING:
    from hydra.core.override_parser.types import Override
    from hydra.core.utils import JobReturn

    from mnist_exp.pipeline.search import Search

# Params a run logs beside its config, counted from the model (see one_run.run_one).
PARAM_COUNT_KEYS = ("model.total_params", "model.trainable_params")
OPTUNA_SWEEPER = "hydra_plugins.mnist_exp_optuna.optuna_sweeper.OptunaSweeper"
BASIC_LAUNCHER = "hydra._internal.core_plugins.basic_launcher.BasicLauncher"
# What a sweep tells each of its jobs, through hydra.job.env_set (any launcher, any
# process); read once, where a job starts, into a SweepContext.
PARENT_RUN_ENV = "MNIST_EXP_SWEEP_PARENT_RUN"  # set in every job of a sweep: the parent's id,
PARENT_ON_DEMAND = "on-demand"  # or this: its first job creates it (see ParentOnDemand)
TRIAL_ENV = "MNIST_EXP_OPTUNA_TRIAL"  # set in every job of an Optuna sweep: its trial number
RESUMED_ENV = "MNIST_EXP_SWEEP_RESUMED"  # set in every job of a grid sweep whose parent is reused
VARIES_ENV = "MNIST_EXP_SWEEP_VARIES"  # set in every job of a sweep: the keys it varies
STORAGE_ENV = "MNIST_EXP_OPTUNA_STORAGE"  # an Optuna sweep's study: its storage URL,
STUDY_ENV = "MNIST_EXP_OPTUNA_STUDY"  # its name,
PRUNER_ENV = "MNIST_EXP_OPTUNA_PRUNER"  # and its pruner
LAUNCH_DIR_ENV = "MNIST_EXP_LAUNCH_DIR"  # hydra/launcher=cluster: where the sweep was started
# How run names write a few long keys (otherwise the key's last part: model.dropout -> dropout).
SHORT_KEYS = {"learning_rate": "lr", "hidden_units": "units", "batch_size": "batch"}
RERUN_IN_SWEEP = "rerun: one run at a time (not with -m); sweep its key instead"
FRESH_KEY = "sweep_fresh"  # the config key that forces a new parent run
PLAIN_OVERRIDE_VALUE = re.compile(r"[\w./:+-]+")  # read by Hydra as it is, unquoted
JOB_NUM_TAG = "sweep.job_num"  # on every child (see one_run): its job's number


@dataclass(frozen=True)
class ProgressSource:
    """Where a sweep's progress is read from and what it is measured against: learnt in
    the launching process before any job starts (or, for a parent created on demand, when
    the first job ends), and pickled with the callback into the processes that run the jobs
    (joblib, Ray)."""

    uri: str  # the store
    experiment_id: str
    parent_run_id: str
    started_ms: int  # this attempt's start; children started before it are earlier ones'
    total: int  # jobs in the whole sweep (see sweep_size)
    launcher_pid: int  # the launching process: only it keeps a live line on a terminal


@dataclass(frozen=True)
class SweepContext:
    """What a job knows of the sweep it belongs to: read once from the environment the
    launcher gave it (:meth:`from_environment`, where the job starts) and passed down.
    Outside a sweep every field is empty."""

    parent_run_id: str | None = None  # the sweep's MLflow parent run, if it exists yet
    parent_on_demand: bool = False  # created by this process's first job (see parent_run)
    varies: tuple[str, ...] | None = None  # the keys the sweep varies (None: no sweep)
    resumed: bool = False  # a continued grid: a finished config is skipped
    trial: str | None = None  # an Optuna trial's number
    study_storage: str | None = None  # where the trial's study is
    study_name: str | None = None
    pruner: str = "none"
    launch_dir: str | None = None  # on a Ray worker: the folder the sweep was started from

    @classmethod
    def from_environment(cls, env: Mapping[str, str]) -> SweepContext:
        """The context a sweep passed its job in ``env`` (``hydra.job.env_set``)."""
        varies = env.get(VARIES_ENV)
        parent = env.get(PARENT_RUN_ENV) or None
        return cls(
            parent_run_id=None if parent == PARENT_ON_DEMAND else parent,
            parent_on_demand=parent == PARENT_ON_DEMAND,
            varies=None if varies is None else tuple(k for k in varies.split(",") if k),
            resumed=bool(env.get(RESUMED_ENV)),
            trial=env.get(TRIAL_ENV) or None,
            study_storage=env.get(STORAGE_ENV) or None,
            study_name=env.get(STUDY_ENV) or None,
            pruner=env.get(PRUNER_ENV) or "none",
            launch_dir=env.get(LAUNCH_DIR_ENV) or None,
        )

    def parent_run(self) -> str | Callable[[], str] | None:
        """The parent run's id or, where the job's run is to create it, the function that
        does (once) and returns its id."""
        return parent_on_demand_id if self.parent_on_demand else self.parent_run_id


class SweepCallback(Callback):
    """Hydra callback that groups a multirun's jobs under one MLflow parent run."""

    progress: ProgressSource | None = None  # set when a multirun starts (or its parent opens)
    _on_demand: ParentOnDemand | None = None  # the parent, when its first job creates it
    _total = 0  # jobs in the whole sweep (see sweep_size)
    _sweep_dir = ""

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        """Validate all grid jobs, create the experiment and the parent run (or leave it
        to the first job, see the module's docstring).

        A config error ends the process here (Hydra would only warn about an exception
        raised by a callback and start the jobs anyway).
        """
        try:
            _validate_grid(config)
            typed = validate(OmegaConf.masked_copy(config, [k for k in config if k != "hydra"]))
            if typed.rerun is not None:
                raise ConfigError(RERUN_IN_SWEEP)
            check_store(typed.tracking.uri)
            search = _check_search(config)
            sweep_spec = {
                "overrides": list(config.hydra.overrides.task),
                "sweeper": OmegaConf.to_container(config.hydra.sweeper, resolve=False),
                "launcher": OmegaConf.to_container(config.hydra.launcher, resolve=False),
            }
            documents = {
                "sweep.yaml": OmegaConf.to_yaml(sweep_spec),
                "config.yaml": OmegaConf.to_yaml(typed),
            }
            # A continued Optuna study continues its parent run too, if it can; so does a
            # grid sweep run again with the same overrides (unless sweep_fresh=true).
            fingerprint = None
            if search is not None:
                earlier = search.parent_run_id()
            elif is_grid(config):
                fingerprint = sweep_fingerprint(config)
                earlier = (
                    None
                    if typed.sweep_fresh
                    else SweepRecorder.latest_parent(typed.tracking, fingerprint)
                )
            else:
                earlier = None
            reopened = SweepRecorder.reopen(typed.tracking, earlier, documents) if earlier else None
            varies = swept_keys(config)
            new_parent = partial(
                SweepRecorder.open,
                typed.tracking,
                sweep_dir=str(config.hydra.sweep.dir),
                sweeper=str(config.hydra.sweeper._target_).rsplit(".", 1)[-1],
                documents=documents,
                fingerprint=fingerprint,
                varies=", ".join(_short_keys(varies).values()),
                started_ms=int(time.time() * 1000),
            )
            self._sweep_dir = str(config.hydra.sweep.dir)
            self._total = sweep_size(config)
            if reopened is None and search is None and _jobs_run_here(config):
                # The first job creates the parent as its training starts (see
                # ParentOnDemand); nothing else here needs MLflow.
                self._on_demand = open_on_demand(new_parent)
                parent_run_id = PARENT_ON_DEMAND
            else:
                parent = reopened or new_parent()
                self._opened(parent, continued=reopened is not None)
                if search is not None:
                    search.remember_parent_run(parent.run_id)
                parent_run_id = parent.run_id
            global _launcher_pid
            _launcher_pid = os.getpid()
        except ConfigError as error:
            exit_with_error(str(error))
        # Every job's config is composed again from these overrides (on any launcher, in
        # any process), and Hydra sets hydra.job.env_set in the job's environment.
        with read_write(config.hydra.overrides):
            config.hydra.overrides.hydra.append(
                f"++hydra.job.env_set.{PARENT_RUN_ENV}={parent_run_id}"
            )
            if reopened is not None and fingerprint is not None:
                config.hydra.overrides.hydra.append(f"++hydra.job.env_set.{RESUMED_ENV}=1")
            config.hydra.overrides.hydra.append(
                f"++hydra.job.env_set.{VARIES_ENV}={quoted(','.join(varies))}"
            )

    def _opened(self, parent: SweepRecorder, continued: bool) -> None:
        """Say which parent run the sweep has (``continued``: an earlier attempt's), and
        read the sweep's progress from it from now on."""
        print(
            f"sweep: MLflow parent run {parent.run_id} for {self._sweep_dir}"
            + (" (continued: jobs already FINISHED are skipped)" if continued else ""),
            file=sys.stderr,
        )
        self.progress = _progress_source(parent, self._total)

    def on_job_end(self, config: DictConfig, job_return: JobReturn, **kwargs: Any) -> None:
        """In a multirun, print the sweep's progress where the job ran (see
        :func:`read_progress`): the live line in the launching process on a terminal, else
        a plain line. Nothing when the store cannot be read: progress never fails a job."""
        if self.progress is None and self._on_demand is not None:
            try:  # created by the job's run (or now, if the job failed before it opened)
                self._opened(self._on_demand.recorder(), continued=False)
            except Exception:
                return
        if self.progress is None:
            return
        if (progress := read_progress(self.progress, finishing_runs())) is None:
            return
        if os.getpid() == self.progress.launcher_pid and sys.stdout.isatty():
            _live_line.show(progress_line(progress, shutil.get_terminal_size().columns - 1))
        else:
            print(progress_line(progress), flush=True)

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        """Wait for the jobs' last writes, rank the children, log and print the
        leaderboard, tag the best child, close up."""
        finish_pending()
        _live_line.close()  # the leaderboard starts on a line of its own
        if self.progress is None and self._on_demand is not None:
            try:  # on_job_end could not create it: say why, in one line
                self._opened(self._on_demand.recorder(), continued=False)
            except ConfigError as error:
                exit_with_error(str(error))
        # Only a grid sweep skips configs; Optuna may try the same config twice, on purpose.
        grid = is_grid(config)
        for parent in open_sweeps():
            results = parent.child_results(_is_swept_candidate, one_per_config=grid)
            board = Leaderboard.from_results(results)
            skipped = parent.skipped_jobs() if grid else 0
            parent.publish(board, skipped)
            registered = parent.register_best(board, config.tracking.get("register_as"))
            print(
                sweep_summary(
                    board,
                    str(config.hydra.sweep.dir),
                    parent.run_id,
                    registered,
                    partial(register_command, config.tracking.uri),
                    ui_hint(
                        config.tracking.uri,
                        parent.experiment_id,
                        None,
                        indent=13,
                        children_of=parent.run_id,
                    ),
                    skipped,
                )
            )
        end_open_sweeps("FINISHED")


def _jobs_run_here(config: DictConfig) -> bool:
    """Whether the multirun's jobs run one after another in this process (Hydra's basic
    launcher), rather than in processes of their own (joblib, Ray)."""
    return config.hydra.launcher._target_ == BASIC_LAUNCHER


def _progress_source(parent: SweepRecorder, total: int) -> ProgressSource:
    """Where the progress of the sweep under ``parent`` (``total`` jobs) is read from."""
    return ProgressSource(
        uri=parent.uri,
        experiment_id=parent.experiment_id,
        parent_run_id=parent.run_id,
        started_ms=parent.started_ms,
        total=total,
        launcher_pid=os.getpid(),
    )


_live_line = LiveLine()  # the launching process's progress line on a terminal
_launcher_pid: int | None = None  # the process that started the multirun, in that process


def in_launching_process() -> bool:
    """Whether this process started the multirun now running (a sequential launcher's
    jobs run in it; joblib's and Ray's in processes of their own)."""
    return _launcher_pid == os.getpid()


def read_progress(
    source: ProgressSource, finishing: set[str] = frozenset()
) -> SweepProgress | None:
    """The sweep's progress as the store has it now: jobs done are the children that ended
    in this attempt (or are ``finishing``: their last writes are under way in this
    process) and those that finished in an earlier one (which a continued grid skips and a
    continued study counts); the best objective is the highest of a finished, unpruned
    child. None when the store cannot be read (a hiccup must not fail the job)."""
    try:
        from mlflow import MlflowClient

        children = MlflowClient(source.uri).search_runs(
            [source.experiment_id],
            filter_string=f"tags.`mlflow.parentRunId` = '{source.parent_run_id}'",
            order_by=["attributes.start_time ASC"],
            max_results=10_000,
        )
    except Exception:
        return None
    ended = [
        run
        for run in children
        if run.info.start_time >= source.started_ms
        and (run.info.status != "RUNNING" or run.info.run_id in finishing)
    ]
    earlier = [
        run
        for run in children
        if run.info.start_time < source.started_ms and run.info.status == "FINISHED"
    ]
    scored = [
        (value, run.data.tags.get(JOB_NUM_TAG, "?"))
        for run in children
        if (run.info.status == "FINISHED" or run.info.run_id in finishing)
        and run.data.tags.get(TRIAL_STATE_TAG) != "PRUNED"
        and (value := read(run.data.metrics, OBJECTIVE)) is not None
    ]
    best, best_job = max(scored, key=lambda pair: pair[0], default=(None, ""))
    return SweepProgress(
        done=min(source.total, len(ended) + len(earlier)),
        total=source.total,
        elapsed_s=time.time() - source.started_ms / 1000,
        ran=len(ended),
        failed=sum(run.info.status not in ("FINISHED", "RUNNING") for run in ended),
        best=best,
        best_job=best_job,
    )


def sweep_size(config: DictConfig) -> int:
    """How many jobs the multirun ``config`` runs in all: a grid's combinations, an
    Optuna study's ``n_trials`` (earlier runs' trials included)."""
    if is_grid(config):
        return len(_grid_jobs(config))
    return int(config.hydra.sweeper.n_trials)


def is_grid(config: DictConfig) -> bool:
    """Whether the multirun ``config`` is a grid: Hydra's basic sweeper, the one sweeper
    the config check allows besides this project's Optuna sweeper."""
    return config.hydra.sweeper._target_ != OPTUNA_SWEEPER


def swept_keys(config: DictConfig) -> list[str]:
    """The config keys a multirun varies: those given a sweep (``a,b``, ``choice(...)``,
    ``interval(...)``, ...) in the sweeper's params or on the command line, in that order;
    a key the command line fixes does not vary."""
    last = {override.key_or_group: override for override in _sweep_overrides(config)}
    return [key for key, override in last.items() if override.is_sweep_override()]


def job_run_name(overrides: list[str], job_num: int | None, context: SweepContext) -> str | None:
    """A sweep job's run name, from the values of the keys its sweep varies (see
    :func:`swept_keys`): ``dropout=0.5 lr=3e-4``, or ``trial 7: dropout=0.312 lr=0.00123``
    in an Optuna study (3 significant digits), ``job N`` when nothing varies. None outside
    a sweep."""
    if context.varies is None:
        return None
    keys = list(context.varies)
    pairs = (o.lstrip("+~").split("=", 1) for o in overrides if "=" in o)
    values = {key.split("@", 1)[0]: value for key, value in pairs}  # group@package=option
    names = _short_keys(keys)
    trial = context.trial
    label = " ".join(
        f"{names[key]}={short_number(values[key], 3) if trial else values[key]}"
        for key in keys
        if key in values
    )
    if trial is not None:
        return f"trial {trial}: {label}" if label else f"trial {trial}"
    return label or f"job {job_num}"


def _short_keys(keys: list[str]) -> dict[str, str]:
    """Each key by its last part (or its :data:`SHORT_KEYS` name), unless two would read
    the same: then by the whole key."""
    short = {key: SHORT_KEYS.get(key.rsplit(".", 1)[-1], key.rsplit(".", 1)[-1]) for key in keys}
    if len(set(short.values())) < len(keys):
        return {key: key for key in keys}
    return short


def override_value(value: str) -> str:
    """``value`` as an override value Hydra reads back unchanged: as it is when plain (a
    path, a simple URL), else :func:`quoted` (a URL's ``?``, ``=`` or ``,`` would not
    parse as one value)."""
    return value if PLAIN_OVERRIDE_VALUE.fullmatch(value) else quoted(value)


def quoted(value: str) -> str:
    """``value`` as a quoted Hydra override value (as a plain string, whatever it holds:
    ``:``, ``/``, ``,``)."""
    return "'" + value.replace("'", "\\'") + "'"


def sweep_fingerprint(config: DictConfig) -> str:
    """What identifies a grid sweep across re-runs: its command-line overrides (sorted,
    ``sweep_fresh`` left out) and its sweeper's params, hashed. The launcher and the
    sweep folder are not part of it: they change where and how jobs run, not which."""
    overrides = sorted(
        o for o in config.hydra.overrides.task if o.split("=", 1)[0].lstrip("+~") != FRESH_KEY
    )
    params = config.hydra.sweeper.get("params")
    params = {} if params is None else OmegaConf.to_container(params, resolve=False)
    return text_digest(json.dumps({"overrides": overrides, "params": params}, sort_keys=True))


def config_digest(cfg: DictConfig) -> str:
    """A job's validated config, hashed: equal for two jobs that train the same thing
    (``sweep_fresh`` left out; Hydra's settings and output folders are not in it)."""
    plain = OmegaConf.to_container(cfg, resolve=True)
    assert isinstance(plain, dict)
    plain.pop(FRESH_KEY, None)
    return text_digest(json.dumps(plain, sort_keys=True, default=str))


def text_digest(text: str, length: int = 16) -> str:
    """The first ``length`` hex digits of ``text``'s SHA-256: a short, stable identity."""
    return hashlib.sha256(text.encode()).hexdigest()[:length]


def finished_job(cfg: DictConfig, context: SweepContext) -> tuple[str, float] | None:
    """In a job of a continued grid sweep: the child run that already FINISHED this
    job's config ``cfg`` (validated), as its run id and validation accuracy; None
    otherwise (not a continued sweep, or the config has no finished run)."""
    if not context.resumed or context.parent_run_id is None:
        return None
    return finished_child(str(cfg.tracking.uri), context.parent_run_id, config_digest(cfg))


def _is_swept_candidate(param: str) -> bool:
    """Config keys a sweep can vary (not where results are stored, not derived counts)."""
    return not param.startswith("tracking.") and param not in PARAM_COUNT_KEYS


def _check_search(config: DictConfig) -> Search | None:
    """For an Optuna sweep: check its settings and open its study before the parent run
    exists (Hydra calls this callback before it instantiates the sweeper)."""
    if config.hydra.sweeper._target_ != OPTUNA_SWEEPER:
        return None
    from mnist_exp.pipeline.search import SearchSettings, prepare_search

    return prepare_search(SearchSettings.of(config.hydra.sweeper), config)


def _validate_grid(config: DictConfig) -> None:
    """Compose and validate every job of a basic (grid) sweep before any of them runs.

    When the grid varies plain values only (``seed=1,2,3``, ``model.dropout=0.2,0.5``:
    no config group, no interpolation), the first job is composed by Hydra and each other
    job is that config with its own values set: the same config, without composing it
    again (about 0.2 s a job)."""
    if not is_grid(config):
        return
    from hydra import compose

    values = _grid_values(config)
    swept = [option for options in values.values() if len(options) > 1 for option in options]
    parser = _overrides_parser()
    groups = set(config.hydra.runtime.choices)
    plain = all(
        override.type.name == "CHANGE"
        and override.package is None
        and override.key_or_group not in groups
        and "${" not in override.input_line
        for override in parser.parse_overrides(swept)
    )
    first = None
    for job in itertools.product(*values.values()):
        if first is None or not plain:
            job_config = first = compose(config.hydra.job.config_name, overrides=list(job))
        else:
            job_config = copy.deepcopy(first)
            for override in parser.parse_overrides([o for o in job if o in swept]):
                OmegaConf.update(job_config, override.key_or_group, override.value(), merge=False)
        try:
            validate(job_config)
        except ConfigError as error:
            raise ConfigError(f"{error} (in sweep job {' '.join(job)})") from None


def _grid_values(config: DictConfig) -> dict[str, list[str]]:
    """Each key of a basic (grid) sweep with its overrides (``key=value``), one per value,
    a later override of a key replacing an earlier one (built on the public Override API,
    as the sweeper does)."""
    values: dict[str, list[str]] = {}
    for override in _sweep_overrides(config):
        key = override.get_key_element()
        if not override.is_sweep_override():
            values[key] = [f"{key}={override.get_value_element_as_str()}"]
        elif override.is_discrete_sweep():
            values[key] = [f"{key}={value}" for value in override.sweep_string_iterator()]
        else:
            raise ConfigError(
                f"{override.input_line}: a grid sweeps lists, choice() and range(); "
                "interval() needs hydra/sweeper=optuna"
            )
    return values


def _grid_jobs(config: DictConfig) -> list[list[str]]:
    """Every job of a basic (grid) sweep, as its overrides, in the order Hydra's basic
    sweeper runs them: the product of each key's values (:func:`_grid_values`)."""
    return [list(job) for job in itertools.product(*_grid_values(config).values())]


def _overrides_parser():
    from hydra.core.override_parser.overrides_parser import OverridesParser

    return OverridesParser.create()


def _sweep_overrides(config: DictConfig) -> list[Override]:
    """The sweeper's params, then the command line's overrides, parsed as Hydra does."""
    params = config.hydra.sweeper.get("params") or {}
    arguments = [f"{key}={value}" for key, value in params.items()]
    arguments += list(config.hydra.overrides.task)
    return _overrides_parser().parse_overrides(arguments)
