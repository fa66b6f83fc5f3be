"""Bayesian search on Optuna 4+: the engine behind ``hydra/sweeper=optuna``.

The Hydra plugin (``hydra_plugins/mnist_exp_optuna``) only declares the sweeper's config
and hands it here. :func:`prepare_search` checks everything before any MLflow run exists
(the search space, the sampler, the direction, the study storage), so a mistake is one
line and exit code 2. The search space means what Hydra means (``int(interval(a, b))`` is
of integers, as in hydra-optuna-sweeper; ``range`` stops before its stop, as in Hydra's
grid sweeps) and is checked against the schema: every value it can give, at the edges
of each key's range (:func:`check_search_space`). :meth:`Search.run` then asks the study
for trials, ``n_jobs`` at a time, launches each as a normal Hydra job through the
configured launcher (basic, joblib, Ray: each job is a child run of the sweep's MLflow
parent, see :mod:`mnist_exp.pipeline.sweep`) and tells the study each job's validation
accuracy.

Studies persist: the storage defaults to ``optuna.db`` beside a SQLite MLflow store and
the study is loaded if it exists, so re-running a sweep continues it. A new SQLite storage
is created whole or not at all (a disk that fills up meanwhile leaves none), and a study is
looked up before it is created, so a storage that an older version left half-made (no
unique index on study names) gains no copies of it. Trials already
COMPLETE or PRUNED, and those RUNNING in a live sweeper, count toward ``n_trials`` (a
total): a re-run only runs the missing ones, and two sweepers on one study share the work.
Two sweepers asking for the study's last missing trial at the same moment both get one
(trial numbers are the storage's, never shared); the one with the higher number sees
``n_trials`` counted trials before it, records its trial FAIL (user attr ``surplus``)
without running it, and stops, so the study ends with exactly ``n_trials``. A SQLite
storage is created under a lock beside it, and waits for the other writer
(:data:`SQLITE_TIMEOUT_S`) instead of failing with "database is locked".
A trial left RUNNING by a sweeper process that is gone is marked FAIL; Ctrl-C marks the
trials in flight FAIL at once. The study
remembers its MLflow parent run, which a continuing sweep reopens.

Pruning: every trial's job finds its trial through its environment (``hydra.job.env_set``:
the trial number, the study's name and storage, the pruner), reports each epoch's
validation accuracy (:func:`trial_pruning`) and stops when the pruner says so; its run
ends FINISHED, tagged ``sweep.trial_state=PRUNED``, and the sweeper tells the study.
"""

from __future__ import annotations

import dataclasses
import functools
import math
import os
import sys
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import optuna
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.core.override_parser.types import Override, Transformer
from hydra.core.utils import JobReturn, JobStatus
from hydra.errors import HydraException
from hydra.plugins.launcher import Launcher
from omegaconf import DictConfig, OmegaConf, read_write
from optuna.distributions import (
    BaseDistribution,
    CategoricalDistribution,
    FloatDistribution,
    IntDistribution,
)
from optuna.trial import TrialState

from mnist_exp.config.schema import ConfigError, validate
from mnist_exp.errors import EXIT_RUN_FAILED, describe_hydra_error, exit_with_error
from mnist_exp.interrupts import deferred
from mnist_exp.pipeline.sweep import (
    PRUNER_ENV,
    STORAGE_ENV,
    STUDY_ENV,
    TRIAL_ENV,
    SweepContext,
    quoted,
    text_digest,
)
from mnist_exp.tracking.owner import owner_alive, owner_tags
from mnist_exp.tracking.store import SQLITE, StoreError, sqlite_path, store_lock

SAMPLERS = ("qmc", "random", "tpe")
PRUNERS = ("hyperband", "median", "none")
DIRECTIONS = ("maximize", "minimize")
STORAGE_FILE = "optuna.db"  # beside a SQLite MLflow store
OWNER_PREFIX = "sweeper."  # trial user attrs naming the sweeper process that asked for it
RESULTS_FILE = "optimization_results.yaml"
PARENT_RUN_ATTR = "mlflow.parent_run_id"  # the study's MLflow parent run, continued by re-runs
PRUNED_ATTR = "pruned_after_epoch"  # set on a trial by its job when the pruner stops it
SURPLUS_ATTR = "surplus"  # set on a trial asked for beyond n_trials (by a racing sweeper), FAIL
COUNTED = (TrialState.COMPLETE, TrialState.PRUNED, TrialState.RUNNING)  # toward n_trials
SQLITE_TIMEOUT_S = 60  # how long a SQLite storage waits for another process's write
RANGE_RULE = (
    "range(start, stop[, step]) needs a step > 0 and a stop above the start "
    "(the stop is excluded: range(1, 4) gives 1, 2, 3)"
)
# Set in every trial's job beside TRIAL_ENV, so that it can report its epochs to the study.


@dataclass(frozen=True)
class SearchSettings:
    """The sweeper's config (``hydra.sweeper``), as the plugin received it."""

    params: dict[str, str]
    n_trials: int
    n_jobs: int
    direction: str
    sampler: str
    pruner: str
    seed: int | None
    study_name: str | None
    storage: str | None
    max_failure_rate: float

    @classmethod
    def of(cls, sweeper: Mapping[str, Any]) -> SearchSettings:
        """The settings in ``hydra.sweeper`` (its ``_target_`` aside), as plain values."""
        plain = OmegaConf.to_container(OmegaConf.create(dict(sweeper)), resolve=True)
        assert isinstance(plain, dict)
        fields = {f.name for f in dataclasses.fields(cls)}
        return cls(
            **{key: value for key, value in plain.items() if key in fields}
            | {"params": plain.get("params") or {}}
        )


@dataclass(frozen=True)
class SearchSpace:
    """What each trial varies (Optuna distributions) and what every job gets as is."""

    distributions: dict[str, BaseDistribution]
    fixed: dict[str, str]
    given: dict[str, str]  # each searched key's override as written, for messages

    def job_overrides(self, trial: optuna.Trial) -> tuple[str, ...]:
        """The Hydra overrides of ``trial``'s job: its sampled params, then the fixed ones."""
        return self.overrides({name: trial.params[name] for name in self.distributions})

    def overrides(self, values: Mapping[str, Any]) -> tuple[str, ...]:
        """The Hydra overrides of a job whose searched keys take ``values`` (those left out
        keep the config's value), then the fixed ones."""
        return (
            *(f"{name}={value}" for name, value in values.items()),
            *(f"{name}={value}" for name, value in self.fixed.items()),
        )


def parse_search_space(arguments: Sequence[str]) -> SearchSpace:
    """The search space of ``key=value`` overrides in hydra-optuna-sweeper's syntax:
    ``interval(a, b)`` (floats, as Hydra parses its bounds), ``int(interval(a, b))``
    (integers), either in ``tag(log, ...)``, ``range(a, b[, step])`` (``b`` excluded),
    ``choice(...)`` or ``a,b,c``; anything else is a fixed value. A key given twice gets
    its last value, so the command line overrides a preset's ``params``. A bad one raises
    :class:`ConfigError` naming it."""
    try:
        parsed = OverridesParser.create().parse_overrides(list(arguments))
    except HydraException as error:
        raise ConfigError(f"bad search space: {str(error).splitlines()[0]}") from None
    distributions: dict[str, BaseDistribution] = {}
    fixed: dict[str, str] = {}
    given: dict[str, str] = {}
    for override in parsed:  # a key given again (on the command line) replaces the first
        key = override.get_key_element()
        distributions.pop(key, None)
        fixed.pop(key, None)
        if not override.is_sweep_override():
            fixed[key] = override.get_value_element_as_str()
            continue
        try:
            distributions[key] = _distribution(override)
        except (HydraException, ValueError, TypeError) as error:
            raise ConfigError(f"{override.input_line}: bad search space: {error}") from None
        given[key] = override.input_line
    return SearchSpace(distributions, fixed, given)


def _distribution(override: Override) -> BaseDistribution:
    """The Optuna distribution of one sweep override (see :func:`parse_search_space`)."""
    value = override.value()
    if override.is_range_sweep() and not (value.step > 0 and value.stop > value.start):
        raise ValueError(RANGE_RULE)
    if override.is_choice_sweep() or (override.is_range_sweep() and value.shuffle):
        return CategoricalDistribution(list(override.sweep_iterator(Transformer.encode)))
    if override.is_range_sweep():  # range(start, stop, step): stop excluded, as in Python
        numbers = (value.start, value.stop, value.step)
        if any(isinstance(n, float) for n in numbers):
            steps = math.floor((value.stop - value.start) / value.step - 1e-9)
            return FloatDistribution(value.start, value.start + steps * value.step, step=value.step)
        last = value.start + (int(value.stop) - 1 - value.start) // value.step * value.step
        return IntDistribution(int(value.start), int(last), step=int(value.step))
    if override.is_interval_sweep():  # int(interval(...)) casts both bounds to int
        log = "log" in value.tags
        if isinstance(value.start, int) and isinstance(value.end, int):
            return IntDistribution(value.start, value.end, log=log)
        return FloatDistribution(float(value.start), float(value.end), log=log)
    raise ValueError("use interval(), range() or choice()")


def check_search_space(space: SearchSpace, config_name: str) -> None:
    """Check that every config the search ``space`` can give is valid, before any run.

    Each check composes config ``config_name`` (Hydra's compose API, in the running app)
    with the searched keys at values the space can give and validates it: the first
    config takes each key's first value (a choice's first, a range's low end), the next
    each key's second, and so on (a key out of values keeps its last), until every
    choice and both ends of every range were in one. The schema's ranges are intervals:
    a range with both ends in is in. A value out of range, of the wrong type (an
    ``interval``'s floats for an integer key) or for a key the config lacks raises
    :class:`ConfigError` naming the key's search space (:func:`_blame`)."""
    from hydra import compose

    def problem(values: Mapping[str, Any]) -> str | None:
        """Why the config with the searched keys at ``values`` is invalid; None if valid."""
        try:
            validate(compose(config_name, overrides=list(space.overrides(values))))
        except ConfigError as error:
            return str(error)
        except HydraException as error:  # a key or group option the config lacks
            return describe_hydra_error(error)
        return None

    edges = {key: _edges(distribution) for key, distribution in space.distributions.items()}
    for i in range(max(map(len, edges.values()), default=1)):
        values = {key: edge[min(i, len(edge) - 1)] for key, edge in edges.items()}
        if (reason := problem(values)) is not None:
            raise _blame(space, values, reason, problem)


def _edges(distribution: BaseDistribution) -> list[Any]:
    """The values of ``distribution`` that :func:`check_search_space` tries: each choice,
    or both ends of a range."""
    if isinstance(distribution, CategoricalDistribution):
        return list(distribution.choices)
    assert isinstance(distribution, FloatDistribution | IntDistribution)
    return list(dict.fromkeys([distribution.low, distribution.high]))


def _blame(
    space: SearchSpace,
    values: dict[str, Any],
    reason: str,
    problem: Callable[[Mapping[str, Any]], str | None],
) -> ConfigError:
    """The error for a config that ``space`` gives with its searched keys at ``values``,
    invalid for ``reason``. Keys are left out (at the config's value) while it stays
    invalid; the first it cannot do without is named, with a hint when it takes as an
    integer the float it was given. With no key left, the space's fixed values are."""
    for key in list(values):
        narrower = {name: value for name, value in values.items() if name != key}
        if (narrower_reason := problem(narrower)) is None:
            error = f"{space.given[key]}: bad search space: {reason}"
            value = values[key]
            whole = isinstance(value, float) and value.is_integer()
            if whole and problem(values | {key: int(value)}) is None:
                error += f"; int({space.given[key].split('=', 1)[1]}) samples integers"
            return ConfigError(error)
        values, reason = narrower, narrower_reason
    return ConfigError(f"bad search space: {reason}")


def study_storage(settings: SearchSettings, tracking_uri: str) -> str:
    """The study's storage URL: ``hydra.sweeper.storage`` if set, else ``optuna.db``
    beside a SQLite MLflow store; any other tracking store needs it set."""
    if settings.storage:
        return settings.storage
    store = sqlite_path(tracking_uri)
    if store is None:
        raise ConfigError(
            f"hydra.sweeper.storage: set it (an RDB URL such as sqlite:///optuna.db or "
            f"postgresql://...) when tracking.uri={tracking_uri} is not a SQLite store"
        )
    return f"sqlite:///{(store.parent / STORAGE_FILE).resolve()}"


def default_study_name(arguments: Sequence[str]) -> str:
    """A name that the same search (space and fixed overrides) always gets, so re-running
    the same command continues its study."""
    search = "\n".join(sorted(arguments))
    return f"sweep-{text_digest(search, length=12)}"


def prepare_search(settings: SearchSettings, config: DictConfig) -> Search:
    """Check the sweeper's settings and open (or create) the study: a bad search space,
    sampler, direction or number, or a storage that cannot be opened, raises
    :class:`ConfigError` (one line) before any job or MLflow run exists."""
    if settings.sampler not in SAMPLERS:
        raise ConfigError(
            f"hydra.sweeper.sampler={settings.sampler}: no such sampler; "
            f"allowed: {', '.join(SAMPLERS)}"
        )
    if settings.pruner not in PRUNERS:
        raise ConfigError(
            f"hydra.sweeper.pruner={settings.pruner}: no such pruner; allowed: {', '.join(PRUNERS)}"
        )
    if settings.direction not in DIRECTIONS:
        raise ConfigError(
            f"hydra.sweeper.direction={settings.direction}: allowed: {', '.join(DIRECTIONS)}"
        )
    for key, low in (("n_trials", 1), ("n_jobs", 1)):
        if getattr(settings, key) < low:
            raise ConfigError(f"hydra.sweeper.{key}={getattr(settings, key)}: must be >= {low}")
    if not 0.0 <= settings.max_failure_rate <= 1.0:
        raise ConfigError(
            f"hydra.sweeper.max_failure_rate={settings.max_failure_rate}: must be in [0, 1]"
        )
    arguments = [f"{key}={value}" for key, value in settings.params.items()]
    arguments += list(config.hydra.overrides.task)
    space = _checked_space(tuple(arguments), str(config.hydra.job.config_name))
    storage_url = study_storage(settings, str(config.tracking.uri))
    name = settings.study_name or default_study_name(arguments)
    study = _open_study(storage_url, name, settings.direction)
    # A seeded sampler continuing a study must not replay the draws of its first trials;
    # QMC keeps its seed, since it resumes its own sequence from the study.
    seed = settings.seed
    if seed is not None and settings.sampler != "qmc":
        seed += len(study.get_trials(deepcopy=False))
    study.sampler = _sampler(settings.sampler, seed)
    env = {STORAGE_ENV: storage_url, STUDY_ENV: name, PRUNER_ENV: settings.pruner}
    return Search(settings, space, study, env, Path(str(config.hydra.sweep.dir)))


@functools.cache
def _checked_space(arguments: tuple[str, ...], config_name: str) -> SearchSpace:
    """The search space of ``arguments`` (:func:`parse_search_space`), checked
    (:func:`check_search_space`) once per process: the sweep's callback and its sweeper
    both prepare the search."""
    space = parse_search_space(arguments)
    check_search_space(space, config_name)
    return space


def _open_study(url: str, name: str, direction: str) -> optuna.Study:
    """Load study ``name`` from ``url`` or create it; an unusable storage is a ConfigError.
    A new SQLite storage is made whole or not at all (:func:`_create_sqlite_storage`)."""
    path = sqlite_path(url)
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    try:
        # Sweepers started together would race to create the storage and the study.
        with store_lock(url):
            if path is not None and (not path.exists() or path.stat().st_size == 0):
                _create_sqlite_storage(path)
            study = _load_or_create_study(url, name, direction)
    except StoreError as error:  # from store_lock, which words it for the MLflow store
        raise ConfigError(
            str(error).replace("tracking.uri=", "hydra.sweeper.storage=", 1)
        ) from None
    except ConfigError:
        raise
    except Exception as error:  # drivers and SQLAlchemy raise anything; all mean the same
        reason = str(error).strip().splitlines()[0] if str(error).strip() else ""
        raise ConfigError(
            f"hydra.sweeper.storage={url}: cannot open the study storage "
            f"({type(error).__name__}{': ' + reason if reason else ''})"
        ) from None
    if study.direction.name.lower() != direction:
        raise ConfigError(
            f"hydra.sweeper.direction={direction}: study {name} in {url} was created to "
            f"{study.direction.name.lower()}; use another hydra.sweeper.study_name"
        )
    return study


def _create_sqlite_storage(path: Path) -> None:
    """Create the SQLite study storage at ``path`` whole or not at all: its tables are made
    in a file beside it, moved into place once complete. (Made in place, a disk filling
    up midway left a storage without the unique index on study names, where every later
    sweep added a copy of its study and failed.)"""
    partial = path.with_name(f"{path.name}.partial-{os.getpid()}")
    try:
        optuna.storages.RDBStorage(f"{SQLITE}{partial}")
        partial.replace(path)
    finally:
        partial.unlink(missing_ok=True)


def _load_or_create_study(url: str, name: str, direction: str) -> optuna.Study:
    """Study ``name`` in the storage at ``url``, created if it has none (under the storage's
    lock). It is looked up first rather than left to ``create_study(load_if_exists=True)``,
    which counts on the storage's unique index on study names: in a storage an older
    version left half-made, without it, every sweep added a copy of its study and failed.
    Such copies are one line saying how to start afresh."""
    storage = _storage(url)
    copies = optuna.study.get_all_study_names(storage).count(name)
    if copies > 1:
        path = sqlite_path(url)
        aside = f"mv {path} {path}.broken" if path else "drop its tables"
        raise ConfigError(
            f"hydra.sweeper.storage={url}: study {name} is in it {copies} times (the storage "
            "was left half-made, without its unique study names: a disk that filled up while "
            "an older version created it); set it aside and run again, a new study starts: "
            f"{aside}"
        )
    if copies:
        return optuna.load_study(study_name=name, storage=storage)
    return optuna.create_study(study_name=name, storage=storage, direction=direction)


@functools.cache
def _storage(url: str) -> optuna.storages.RDBStorage:
    """The storage at ``url``, one per process (every trial's job under the basic launcher
    reuses the sweeper's); a SQLite one waits :data:`SQLITE_TIMEOUT_S` for a lock held by
    another process (sweepers and their jobs write to it at once)."""
    if sqlite_path(url) is None:
        return optuna.storages.RDBStorage(url)
    return optuna.storages.RDBStorage(
        url, engine_kwargs={"connect_args": {"timeout": SQLITE_TIMEOUT_S}}
    )


def _trial_id(url: str, study_name: str, number: int) -> int:
    """The storage's id of trial ``number`` of study ``study_name``: how a running trial is
    reopened in another process (a job), through the public methods of the storage this
    process opened (Optuna keeps a study's own storage and ids private)."""
    storage = _storage(url)
    study_id = storage.get_study_id_from_name(study_name)
    return storage.get_trial_id_from_study_id_trial_number(study_id, number)


def _sampler(name: str, seed: int | None) -> optuna.samplers.BaseSampler:
    """The sampler called ``name`` (one of :data:`SAMPLERS`)."""
    if name == "random":
        return optuna.samplers.RandomSampler(seed=seed)
    if name == "qmc":  # quasi-random (Sobol) points: even coverage of the space
        return optuna.samplers.QMCSampler(seed=seed, warn_independent_sampling=False)
    return optuna.samplers.TPESampler(seed=seed)


def _pruner(name: str) -> optuna.pruners.BasePruner:
    """The pruner called ``name`` (one of :data:`PRUNERS`)."""
    if name == "median":  # below the median of earlier trials at the same epoch: stop
        return optuna.pruners.MedianPruner()
    if name == "hyperband":
        return optuna.pruners.HyperbandPruner(min_resource=1)
    return optuna.pruners.NopPruner()


def trial_pruning(context: SweepContext) -> Callable[[float, int, bool], bool] | None:
    """In an Optuna trial's job (``context``): a function that reports an epoch's
    validation accuracy to the trial and says whether the pruner stops it (and if so notes
    the epoch on the trial, for the sweeper to tell the study it was pruned). After the
    last epoch there is nothing left to save: the trial completes with its value. None
    outside such a job."""
    number, storage, name = context.trial, context.study_storage, context.study_name
    if number is None or not storage or not name:
        return None
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    pruner = _pruner(context.pruner)
    study = optuna.load_study(study_name=name, storage=_storage(storage), pruner=pruner)
    trial = optuna.Trial(study, _trial_id(storage, name, int(number)))

    def should_stop(value: float, epoch: int, last: bool) -> bool:
        trial.report(value, epoch)
        if last or not trial.should_prune():
            return False
        trial.set_user_attr(PRUNED_ATTR, epoch)
        return True

    return should_stop


class Search:
    """One sweeper process's share of a study: trials asked, launched as jobs, told."""

    def __init__(
        self,
        settings: SearchSettings,
        space: SearchSpace,
        study: optuna.Study,
        job_env: dict[str, str],
        sweep_dir: Path,
    ) -> None:
        self.settings = settings
        self.space = space
        self.study = study
        self.job_env = job_env  # what every trial's job needs to find the study
        self.storage_url = job_env[STORAGE_ENV]
        self.sweep_dir = sweep_dir

    def pass_study_to_jobs(self, config: DictConfig) -> None:
        """Give every job of the sweep ``config`` where the study is (``hydra.job.env_set``
        in the sweep's own overrides, from which the launcher composes each job), so that
        each trial adds only its number to its overrides."""
        with read_write(config.hydra.overrides):
            config.hydra.overrides.hydra.extend(
                [f"++hydra.job.env_set.{k}={quoted(v)}" for k, v in self.job_env.items()]
            )

    def parent_run_id(self) -> str | None:
        """The MLflow parent run of this study's last sweep (None for a new study)."""
        return self.study.user_attrs.get(PARENT_RUN_ATTR)

    def remember_parent_run(self, run_id: str) -> None:
        """Note ``run_id`` as the study's MLflow parent run, for the next sweep to continue."""
        self.study.set_user_attr(PARENT_RUN_ATTR, run_id)

    def run(self, launcher: Launcher) -> None:
        """Run trials until the study has ``n_trials`` counted ones (or this process has
        launched ``n_trials``), ``n_jobs`` at a time; write the best trial to
        ``optimization_results.yaml`` in the sweep folder. Too many failed trials end the
        sweep with exit code 1."""
        stale = self._fail_stale_trials()
        print(
            f"sweep: optuna study {self.study.study_name} in {self.storage_url}: "
            f"{self._counted()} of {self.settings.n_trials} trials done or running"
            + (f", {stale} stale trial(s) marked FAIL" if stale else ""),
            file=sys.stderr,
        )
        launched = failed = 0
        while (batch := self._next_batch_size(launched)) > 0:
            in_flight: list[optuna.Trial] = []  # asked and not yet told
            try:
                for _ in range(batch):
                    with deferred():  # a trial is never left without its owner noted
                        if (trial := self._ask()) is not None:
                            in_flight.append(trial)
                if not in_flight:  # another sweeper took the last ones
                    continue
                # Job folders are named by trial number (consecutive unless another sweeper
                # asked in between), so a continued study never overwrites an earlier job.
                returns = launcher.launch(
                    [self._job_overrides(trial) for trial in in_flight],
                    initial_job_idx=in_flight[0].number,
                )
                launched += len(returns)
                for trial, ret in zip(list(in_flight), returns, strict=True):
                    with deferred():
                        failed += not self._tell(trial, ret)
                        in_flight.remove(trial)
            except BaseException:
                with deferred():  # Ctrl-C, or a launcher that failed: the study stays whole
                    for trial in in_flight:
                        self.study.tell(trial, state=TrialState.FAIL)
                raise
            if failed / launched > self.settings.max_failure_rate:
                exit_with_error(
                    f"{failed} of {launched} trials failed, more than "
                    f"hydra.sweeper.max_failure_rate={self.settings.max_failure_rate}",
                    EXIT_RUN_FAILED,
                )
        self._write_results()

    def _job_overrides(self, trial: optuna.Trial) -> tuple[str, ...]:
        """The trial's params and fixed values, and (in its environment, through
        ``hydra.job.env_set``) its number, for pruning (:meth:`pass_study_to_jobs` says
        where the study is)."""
        return (
            *self.space.job_overrides(trial),
            f"++hydra.job.env_set.{TRIAL_ENV}={trial.number}",
        )

    def _next_batch_size(self, launched: int) -> int:
        """How many trials to ask for now: at most ``n_jobs``, no more than the study still
        misses, and no more than this process may still launch (failed trials do not count
        toward the total, so a search whose every trial fails still ends)."""
        total = self.settings.n_trials
        return max(0, min(self.settings.n_jobs, total - self._counted(), total - launched))

    def _counted(self) -> int:
        """The study's trials that count toward ``n_trials``: finished or still running."""
        return len(self.study.get_trials(deepcopy=False, states=COUNTED))

    def _fail_stale_trials(self) -> int:
        """Mark FAIL each RUNNING trial whose sweeper process is gone (on this host);
        return how many. Trials of a live sweeper, or of another host, are left alone."""
        stale = 0
        for trial in self.study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
            owner = {
                key.removeprefix(OWNER_PREFIX): str(value)
                for key, value in trial.user_attrs.items()
                if key.startswith(OWNER_PREFIX)
            }
            if owner_alive(owner) is False:
                self.study.tell(trial.number, state=TrialState.FAIL)
                stale += 1
        return stale

    def _ask(self) -> optuna.Trial | None:
        """A new trial with every searched param sampled, owned by this process; None
        when the study already had ``n_trials`` counted trials before it (another sweeper
        asked at the same moment): that trial is recorded FAIL, tagged ``surplus``."""
        trial = self.study.ask(fixed_distributions=self.space.distributions)
        # The storage numbers trials under a lock, and a trial is RUNNING from its
        # creation: every trial numbered below this one is in the storage already.
        before = [
            t
            for t in self.study.get_trials(deepcopy=False, states=COUNTED)
            if t.number < trial.number
        ]
        if len(before) >= self.settings.n_trials:
            trial.set_user_attr(SURPLUS_ATTR, True)
            self.study.tell(trial, state=TrialState.FAIL)
            return None
        for key, value in owner_tags().items():
            trial.set_user_attr(OWNER_PREFIX + key, value)
        return trial

    def _tell(self, trial: optuna.Trial, ret: JobReturn) -> bool:
        """Tell the study how ``trial``'s job ended; True if it completed with a score."""
        value = _objective(ret)
        # Read from the storage: the job (another process) may have set it.
        trial_id = _trial_id(self.storage_url, self.study.study_name, trial.number)
        attrs = _storage(self.storage_url).get_trial_user_attrs(trial_id)
        if value is not None and PRUNED_ATTR in attrs:
            self.study.tell(trial, state=TrialState.PRUNED)
            return True
        if value is None:
            self.study.tell(trial, state=TrialState.FAIL)
            return False
        self.study.tell(trial, value)
        return True

    def _write_results(self) -> None:
        """The study's best trial so far (all its trials, not only this process's)."""
        results: dict[str, Any] = {
            "name": "optuna",
            "study_name": self.study.study_name,
            "storage": self.storage_url,
            "n_trials": len(self.study.trials),
        }
        try:
            best = self.study.best_trial
        except ValueError:  # no trial completed yet
            best = None
        if best is not None:
            results |= {"best_params": best.params, "best_value": best.value}
        self.sweep_dir.mkdir(parents=True, exist_ok=True)
        OmegaConf.save(OmegaConf.create(results), self.sweep_dir / RESULTS_FILE)


def _objective(ret: JobReturn) -> float | None:
    """A job's validation accuracy; None when it failed (an exception, or NaN)."""
    if ret.status is not JobStatus.COMPLETED:
        return None
    try:
        value = float(ret.return_value)
    except (TypeError, ValueError):
        return None
    return value if math.isfinite(value) else None
