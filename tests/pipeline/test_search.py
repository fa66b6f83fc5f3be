"""The Optuna sweeper (hydra/sweeper=optuna): its search space (checked against the schema
before any run), its persistent study shared and continued (its storage made whole), and
whole sweeps through the CLI (tiny data, in subprocesses; bad settings in-process)."""

from __future__ import annotations

import contextlib
import csv
import dataclasses
import json
import os
import socket
import sqlite3
import subprocess
import sys
import urllib.request
from collections.abc import Sequence
from pathlib import Path

import optuna
import pytest
import yaml
from conftest import (
    AROUND_TRAINING,
    answers,
    finish,
    free_port,
    in_process,
    interrupt_during_training,
    run_cli,
    start,
    stop_process_group,
    wait_for_line,
    wait_until,
)
from hydra import initialize_config_module
from hydra.core.utils import JobReturn, JobStatus
from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution
from optuna.trial import TrialState
from sqlalchemy import event
from sqlalchemy.engine import Engine

from mnist_exp.cli.run import main as run_main
from mnist_exp.config.schema import ConfigError
from mnist_exp.pipeline import search
from mnist_exp.pipeline.search import SearchSettings
from mnist_exp.pipeline.sweep import TRIAL_ENV, SweepContext

SETTINGS = SearchSettings(
    params={"model.dropout": "interval(0.0, 0.5)"},
    n_trials=3,
    n_jobs=2,
    direction="maximize",
    sampler="random",
    pruner="median",
    seed=0,
    study_name="s",
    storage=None,
    max_failure_rate=1.0,
)


class FakeLauncher:
    """Launches nothing: each job 'scores' its dropout (NaN for dropout above ``fail_above``)."""

    def __init__(self, fail_above: float = 1.0) -> None:
        self.fail_above = fail_above
        self.jobs: list[tuple[int, Sequence[str]]] = []

    def launch(self, job_overrides: Sequence[Sequence[str]], initial_job_idx: int) -> list:
        """Record the jobs; return one JobReturn per job."""
        returns = []
        for i, overrides in enumerate(job_overrides):
            self.jobs.append((initial_job_idx + i, overrides))
            dropout = float(dict(o.split("=", 1) for o in overrides)["model.dropout"])
            value = float("nan") if dropout > self.fail_above else dropout
            returns.append(JobReturn(status=JobStatus.COMPLETED, _return_value=value))
        return returns


def open_search(tmp_path: Path, **changes) -> search.Search:
    """A search of SETTINGS (changed as given) with its study beside ``tmp_path/mlflow.db``."""
    settings = dataclasses.replace(SETTINGS, **changes)
    storage = search.study_storage(settings, f"sqlite:///{tmp_path / 'mlflow.db'}")
    space = search.parse_search_space([f"{k}={v}" for k, v in settings.params.items()])
    study = search._open_study(storage, settings.study_name, settings.direction)
    study.sampler = optuna.samplers.RandomSampler(seed=settings.seed)
    env = {search.STORAGE_ENV: storage, search.STUDY_ENV: settings.study_name}
    return search.Search(settings, space, study, env, tmp_path / "sweep")


def test_search_space_syntax_of_the_old_plugin():
    space = search.parse_search_space(
        [
            "a=interval(0.0, 0.5)",
            "b=tag(log, interval(1e-4, 1e-2))",
            "c=choice([256],[512,256])",
            "d=range(1, 7, 2)",
            "e=1,2",
            "f=interval(1, 8)",
            "i=int(interval(1, 8))",
            "j=tag(log, int(interval(1, 64)))",
            "g=3",
            "h=choice(1, 2)",
            "h=4",  # given again: replaces the first
        ]
    )
    assert space.distributions == {
        "a": FloatDistribution(0.0, 0.5),
        "b": FloatDistribution(1e-4, 1e-2, log=True),
        "c": CategoricalDistribution(["[256]", "[512,256]"]),
        "d": IntDistribution(1, 5, step=2),
        "e": CategoricalDistribution([1, 2]),
        "f": FloatDistribution(1.0, 8.0),  # Hydra parses an interval's bounds as floats
        "i": IntDistribution(1, 8),  # as hydra-optuna-sweeper reads int(interval(...))
        "j": IntDistribution(1, 64, log=True),
    }
    assert space.fixed == {"g": "3", "h": "4"}


@pytest.mark.parametrize("argument", ["a=interval(0.5, 0.1)", "a=interval(", "a=glob(*)"])
def test_a_bad_search_space_is_a_config_error(argument):
    with pytest.raises(ConfigError):
        search.parse_search_space([argument])


@pytest.mark.parametrize(
    "argument",
    [
        "seed=range(1,3,0)",
        "seed=range(7,1,-2)",
        "seed=range(2,2)",
        "seed=range(0.5,1,0)",
        "seed=shuffle(range(3,1))",
    ],
)
def test_a_range_that_gives_nothing_in_order_is_one_line_saying_what_is_allowed(argument):
    with pytest.raises(ConfigError) as raised:
        search.parse_search_space([argument])
    assert str(raised.value) == (
        f"{argument}: bad search space: range(start, stop[, step]) needs a step > 0 and a "
        "stop above the start (the stop is excluded: range(1, 4) gives 1, 2, 3)"
    )


def test_the_study_lives_beside_a_sqlite_store_else_needs_a_url(tmp_path):
    assert search.study_storage(SETTINGS, "sqlite:///outputs/mlflow.db") == (
        f"sqlite:///{Path('outputs/optuna.db').resolve()}"
    )
    assert search.study_storage(dataclasses.replace(SETTINGS, storage="x://y"), "http://h") == (
        "x://y"
    )
    with pytest.raises(ConfigError, match=r"^hydra\.sweeper\.storage: set it"):
        search.study_storage(SETTINGS, "http://tracking:5000")


def test_an_unusable_storage_is_a_config_error(tmp_path):
    with pytest.raises(ConfigError, match=r"^hydra\.sweeper\.storage=nosuch://x: cannot open"):
        search._open_study("nosuch://x", "s", "maximize")


def test_a_rerun_continues_the_study_and_only_runs_the_missing_trials(tmp_path):
    launcher = FakeLauncher()
    open_search(tmp_path).run(launcher)
    assert [number for number, _ in launcher.jobs] == [0, 1, 2]  # batches of 2, then 1
    open_search(tmp_path).run(launcher)
    assert len(launcher.jobs) == 3  # nothing missing
    open_search(tmp_path, n_trials=5).run(launcher)
    assert [number for number, _ in launcher.jobs] == [0, 1, 2, 3, 4]
    study = optuna.load_study(study_name="s", storage=f"sqlite:///{tmp_path / 'optuna.db'}")
    assert [t.state for t in study.trials] == [TrialState.COMPLETE] * 5
    results = yaml.safe_load((tmp_path / "sweep" / search.RESULTS_FILE).read_text())
    assert results["best_value"] == max(t.value for t in study.trials)


def test_failed_trials_do_not_count_but_a_sweep_still_ends(tmp_path):
    launcher = FakeLauncher(fail_above=-1.0)  # every trial fails
    open_search(tmp_path).run(launcher)
    assert len(launcher.jobs) == 3
    study = optuna.load_study(study_name="s", storage=f"sqlite:///{tmp_path / 'optuna.db'}")
    assert {t.state for t in study.trials} == {TrialState.FAIL}


def test_too_many_failures_end_the_sweep_with_exit_1(tmp_path):
    with pytest.raises(SystemExit) as stopped:
        open_search(tmp_path, max_failure_rate=0.0).run(FakeLauncher(fail_above=-1.0))
    assert stopped.value.code == 1


def test_a_trial_left_running_by_a_dead_sweeper_fails_a_live_ones_is_kept(tmp_path):
    first = open_search(tmp_path)
    dead = first.study.ask()
    for key, value in {"host": socket.gethostname(), "pid": "999999999"}.items():
        dead.set_user_attr(search.OWNER_PREFIX + key, value)
    live = first._ask()  # owned by this (live) process: another sweeper's trial in flight
    launcher = FakeLauncher()
    open_search(tmp_path).run(launcher)
    states = {t.number: t.state for t in first.study.get_trials()}
    assert states[dead.number] == TrialState.FAIL
    assert states[live.number] == TrialState.RUNNING
    assert len(launcher.jobs) == 2  # 3 counted: the live trial and 2 new ones


@pytest.fixture
def optuna_sweep(tmp_path, store, mnist_npz):
    """Run a 1-epoch ``+sweep=optuna_mlp`` on tiny data into ``store`` with extra args."""

    def _sweep(*args: str) -> object:
        return run_cli(
            [
                "-m",
                "+sweep=optuna_mlp",
                "train.batch_size=128",  # fixed: fewer steps
                AROUND_TRAINING,
                "train.epochs=1",
                "train.verbose=0",
                *args,  # later values win
                f"data.path={mnist_npz}",
                f"hydra.sweep.dir={tmp_path / 'sweep'}",
                *store.overrides,
            ],
            cwd=tmp_path,
        )

    return _sweep


@pytest.mark.slow
def test_a_study_stopped_by_ctrl_c_and_sigkill_is_continued_to_exactly_n_trials(
    tmp_path, store, optuna_sweep, mnist_npz
):
    study_name = "stopped"  # named: the interrupted commands train longer (other overrides)
    long_sweep = [
        "-m",
        "+sweep=optuna_mlp",
        f"hydra.sweeper.study_name={study_name}",
        "hydra.sweeper.n_trials=2",
        "hydra.sweeper.n_jobs=1",
        "train.batch_size=128",
        AROUND_TRAINING,
        f"data.path={mnist_npz}",
        f"hydra.sweep.dir={tmp_path / 'sweep'}",
        *store.overrides,
    ]
    code, stderr = interrupt_during_training(long_sweep, tmp_path)
    assert code == 130, stderr
    assert "run the same command again (without sweep_fresh=true)" in stderr.splitlines()[-1]
    storage = f"sqlite:///{tmp_path / 'optuna.db'}"
    study = optuna.load_study(study_name=study_name, storage=storage)
    assert [t.state for t in study.trials] == [TrialState.FAIL]  # told, not left RUNNING
    (parent,) = [r for r in store.runs() if r.data.tags.get("sweep.role") == "parent"]
    assert parent.info.status == "KILLED"
    assert [r.info.status for r in store.sweep_children()] == ["KILLED"]

    # Again, and killed with SIGKILL while its trial trains: nothing can tell that trial.
    crashed = start([*long_sweep, "train.epochs=1000"], tmp_path)
    try:
        wait_for_line(crashed, "Epoch 2/")
    finally:
        crashed.kill()
        finish(crashed)
    study = optuna.load_study(study_name=study_name, storage=storage)
    assert [t.state for t in study.trials] == [TrialState.FAIL, TrialState.RUNNING]

    done = optuna_sweep(f"hydra.sweeper.study_name={study_name}", "hydra.sweeper.n_trials=2")
    assert done.returncode == 0, done.stderr
    assert "1 stale trial(s) marked FAIL" in done.stderr
    study = optuna.load_study(study_name=study_name, storage=storage)
    assert [t.state for t in study.trials[:2]] == [TrialState.FAIL] * 2
    complete = [t for t in study.trials if t.state == TrialState.COMPLETE]
    assert len(complete) == 2  # exactly n_trials, the interrupted ones not counted
    assert [set(t.intermediate_values) for t in complete] == [{1}, {1}]  # from the jobs
    runs = store.runs()
    (again,) = [r for r in runs if r.data.tags.get("sweep.role") == "parent"]
    assert again.info.run_id == parent.info.run_id  # the study's parent, continued
    assert again.info.status == "FINISHED"
    statuses = sorted(r.info.status for r in store.sweep_children())
    assert statuses == ["FINISHED"] * 2 + ["KILLED"] * 2  # the crashed one's closed too
    # ... before the leaderboards (the terminal's, the parent's) list it: KILLED, as it ended.
    board = store.client().download_artifacts(parent.info.run_id, "leaderboard.md", tmp_path)
    for listed in (done.stdout, Path(board).read_text()):
        assert "RUNNING" not in listed
        assert listed.count("KILLED") == 2, listed
    kids = [r for r in store.sweep_children() if r.info.status == "FINISHED"]
    assert sorted(int(kid.data.tags["sweep.trial"]) for kid in kids) == [t.number for t in complete]
    assert sorted(t.value for t in complete) == sorted(
        kid.data.metrics["final/val_accuracy"] for kid in kids
    )
    # Each trial's run is named by its number and the values it tried: all distinct.
    names = [kid.info.run_name for kid in store.sweep_children()]
    assert len(set(names)) == len(names) == 4
    for kid in kids:
        assert kid.info.run_name.startswith(f"trial {kid.data.tags['sweep.trial']}: units=[")

    more = optuna_sweep(f"hydra.sweeper.study_name={study_name}", "hydra.sweeper.n_trials=3")
    assert more.returncode == 0, more.stderr
    study = optuna.load_study(study_name=study_name, storage=storage)
    complete = [t for t in study.trials if t.state == TrialState.COMPLETE]
    assert len(complete) == 3
    # The study's verdict is its highest validation accuracy (a misplaced direction would
    # silently pick the lowest).
    results = yaml.safe_load((tmp_path / "sweep" / "optimization_results.yaml").read_text())
    assert results["best_value"] == max(t.value for t in complete)
    (parent,) = [r for r in store.runs() if r.data.tags.get("sweep.role") == "parent"]
    assert parent.info.run_id == again.info.run_id
    assert parent.data.metrics["sweep/finished_runs"] == 3  # the leaderboard: whole study


def test_the_default_study_name_follows_the_search_not_the_order_of_overrides():
    first = search.default_study_name(["model.dropout=interval(0,0.5)", "train.epochs=2"])
    assert first == search.default_study_name(["train.epochs=2", "model.dropout=interval(0,0.5)"])
    assert first != search.default_study_name(["model.dropout=interval(0,0.5)", "train.epochs=3"])


@pytest.mark.parametrize(
    ("override", "expected"),
    [
        ("hydra.sweeper.sampler=nope", "hydra.sweeper.sampler=nope: no such sampler; "),
        ("model.dropout=interval(0.5,0.1)", "model.dropout=interval(0.5,0.1): bad search"),
        ("hydra.sweeper.storage=nosuch://x", "hydra.sweeper.storage=nosuch://x: cannot"),
        ("hydra.sweeper.pruner=nope", "hydra.sweeper.pruner=nope: no such pruner; "),
        # The lock file beside the storage cannot be made: the storage's key, not the store's.
        (
            "hydra.sweeper.storage=sqlite:////proc/optuna.db",
            "hydra.sweeper.storage=sqlite:////proc/optuna.db: cannot write beside the store (",
        ),
        ("seed=range(1,3,0)", "seed=range(1,3,0): bad search space: range(start, stop[, step])"),
        # Every value the space can give is checked against the schema (types and ranges).
        (
            "train.epochs=interval(1,3)",
            "train.epochs=interval(1,3): bad search space: train.epochs=1.0 is not allowed; "
            "expected an integer >= 1; int(interval(1,3)) samples integers",
        ),
        (
            "train.batch_size=choice(32,0)",
            "train.batch_size=choice(32,0): bad search space: train.batch_size=0 is not allowed",
        ),
        (
            "model.dropout=interval(0.2,1.0)",
            "model.dropout=interval(0.2,1.0): bad search space: model.dropout=1.0 is not allowed; "
            "expected a number >= 0 and < 1",
        ),
        (
            "model.dropot=interval(0,0.5)",
            "model.dropot=interval(0,0.5): bad search space: model.dropot: unknown key; ",
        ),
        (
            "optimizer=choice(adam,nope)",
            "optimizer=choice(adam,nope): bad search space: optimizer=nope: no such option; ",
        ),
        (  # adam (the default optimizer) has no momentum
            "optimizer.momentum=interval(0,0.9)",
            "optimizer.momentum=interval(0,0.9): bad search space: optimizer.momentum: unknown key",
        ),
    ],
)
def test_bad_sweeper_settings_are_one_line_exit_2_before_any_run(tmp_path, override, expected):
    done = in_process(
        run_main,
        [
            "-m",
            "+sweep=optuna_mlp",
            "hydra.sweeper.n_trials=1",
            f"data.path={tmp_path / 'none.npz'}",  # a space that slips through fails fast
            override,
            f"hydra.sweep.dir={tmp_path / 'sweep'}",
            f"tracking.uri=sqlite:///{tmp_path / 'mlflow.db'}",
        ],
    )
    assert done.returncode == 2, done.stderr
    (line,) = done.stderr.splitlines()
    assert line.startswith(f"error: {expected}"), line
    assert not (tmp_path / "mlflow.db").exists()  # no MLflow run, not even the store
    assert not (tmp_path / "optuna.db").exists()


def test_every_value_of_a_good_space_passes_the_check():
    space = search.parse_search_space(
        [
            "+sweep=optuna_mlp",
            "train.epochs=int(interval(1,2))",
            "train.batch_size=tag(log, int(interval(16,256)))",
            "optimizer=choice(sgd,rmsprop)",
            "optimizer.momentum=interval(0,0.9)",  # both optimizers have it
            "seed=range(1,4)",
        ]
    )
    with initialize_config_module("mnist_exp.conf", version_base="1.3"):
        search.check_search_space(space, "config")  # raises nothing


def _full_disk(connection: sqlite3.Connection, _: object) -> None:
    """A SQLite connection's disk full after 2 pages: room for Optuna's first table only."""
    connection.execute("PRAGMA max_page_count = 2")


def test_a_storage_the_disk_fills_up_while_it_is_made_is_left_unmade(tmp_path):
    url = f"sqlite:///{tmp_path / 'optuna.db'}"
    event.listen(Engine, "connect", _full_disk)
    try:
        with pytest.raises(ConfigError, match=r"cannot open the study storage .*disk is full"):
            search._open_study(url, "s", "maximize")
    finally:
        event.remove(Engine, "connect", _full_disk)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["optuna.db.lock"]  # nothing half-made
    for _ in range(3):  # with room again: made whole, then continued
        study = search._open_study(url, "s", "maximize")
        study.add_trial(optuna.trial.create_trial(value=0.5))
    assert optuna.study.get_all_study_names(url) == ["s"]
    assert len(optuna.load_study(study_name="s", storage=url).trials) == 3


def test_a_storage_half_made_by_an_older_version_is_continued_without_copies(tmp_path):
    url = f"sqlite:///{tmp_path / 'optuna.db'}"
    event.listen(Engine, "connect", _full_disk)
    try:
        with pytest.raises(Exception, match="disk is full"):
            optuna.storages.RDBStorage(url)  # made in place: no unique index on study names
    finally:
        event.remove(Engine, "connect", _full_disk)
    study = optuna.create_study(study_name="s", storage=url, direction="maximize")
    study.add_trial(optuna.trial.create_trial(value=0.5))
    for _ in range(3):
        assert len(search._open_study(url, "s", "maximize").trials) == 1
    assert optuna.study.get_all_study_names(url) == ["s"]  # no copy of the study added


def test_copies_of_a_study_in_a_half_made_storage_are_one_line_with_the_fix(tmp_path):
    url = f"sqlite:///{tmp_path / 'optuna.db'}"
    event.listen(Engine, "connect", _full_disk)
    try:
        with pytest.raises(Exception, match="disk is full"):
            optuna.storages.RDBStorage(url)
    finally:
        event.remove(Engine, "connect", _full_disk)
    for _ in range(2):  # as older versions did: the second adds a copy, then fails
        with contextlib.suppress(optuna.exceptions.StorageInternalError):
            optuna.create_study(study_name="s", storage=url, load_if_exists=True)
    path = tmp_path / "optuna.db"
    with pytest.raises(ConfigError) as raised:
        search._open_study(url, "s", "maximize")
    assert str(raised.value) == (
        f"hydra.sweeper.storage={url}: study s is in it 2 times (the storage was left "
        "half-made, without its unique study names: a disk that filled up while an older "
        f"version created it); set it aside and run again, a new study starts: mv {path} "
        f"{path}.broken"
    )


class PruningLauncher(FakeLauncher):
    """Runs each job here as a trial's job would: with its environment (where the study
    is, from the sweep; its trial number, from its overrides), reporting epochs (each
    scoring its dropout) to the study."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        super().__init__()
        self.monkeypatch = monkeypatch
        self.stopped: list[int | None] = []

    def launch(self, job_overrides: Sequence[Sequence[str]], initial_job_idx: int) -> list:
        """Report 3 epochs per job, as its pruner allows; then score as FakeLauncher."""
        for overrides in job_overrides:
            for override in overrides:
                if override.startswith("++hydra.job.env_set."):
                    key, value = override.removeprefix("++hydra.job.env_set.").split("=", 1)
                    self.monkeypatch.setenv(key, value.strip("'"))
            should_stop = search.trial_pruning(SweepContext.from_environment(os.environ))
            assert should_stop is not None
            dropout = float(dict(o.split("=", 1) for o in overrides)["model.dropout"])
            epoch = next((e for e in (1, 2, 3) if should_stop(dropout, e, e == 3)), None)
            self.stopped.append(epoch)
        return super().launch(job_overrides, initial_job_idx)


def test_a_trial_behind_the_median_is_pruned_in_its_job_and_told_so(tmp_path, monkeypatch):
    monkeypatch.setattr(search, "_pruner", lambda name: optuna.pruners.MedianPruner(1))
    launcher = PruningLauncher(monkeypatch)
    running = open_search(tmp_path, n_trials=6, n_jobs=1)
    running.job_env[search.PRUNER_ENV] = "median"
    for key, value in running.job_env.items():  # what pass_study_to_jobs gives every job
        monkeypatch.setenv(key, value)
    running.run(launcher)
    trials = optuna.load_study(
        study_name="s", storage=f"sqlite:///{tmp_path / 'optuna.db'}"
    ).get_trials()
    assert launcher.stopped[0] is None  # the first trial has nothing to be compared with
    for trial, stopped in zip(trials, launcher.stopped, strict=True):
        if stopped is None:
            assert trial.state == TrialState.COMPLETE
        else:
            assert trial.state == TrialState.PRUNED
            assert trial.user_attrs[search.PRUNED_ATTR] == stopped == 1
    assert TrialState.PRUNED in {t.state for t in trials}


def test_outside_an_optuna_trial_nothing_reports():
    assert search.trial_pruning(SweepContext()) is None


@pytest.mark.slow
@pytest.mark.parametrize("launcher", ["basic", "joblib"])  # Ray: test_cluster.py
def test_a_pruned_trial_stops_training_and_its_run_ends_finished(
    tmp_path, store, optuna_sweep, launcher
):
    # 5 earlier trials, perfect after every epoch: the median pruner stops any real one.
    storage = f"sqlite:///{tmp_path / 'optuna.db'}"
    study = optuna.create_study(study_name="pruned", storage=storage, direction="maximize")
    for _ in range(5):
        study.add_trial(optuna.trial.create_trial(value=1.0, intermediate_values={1: 1, 2: 1}))
    done = optuna_sweep(
        "hydra.sweeper.study_name=pruned",
        "hydra.sweeper.n_trials=6",
        "train.epochs=2",
        f"hydra/launcher={launcher}",  # joblib: the job reports from a worker process
    )
    assert done.returncode == 0, done.stderr
    (run,) = [r for r in store.runs() if r.data.tags.get("mlflow.parentRunId")]
    assert run.info.status == "FINISHED"
    assert run.data.tags["sweep.trial_state"] == "PRUNED"
    assert "final/val_accuracy" in run.data.metrics
    history = store.client().get_metric_history(run.info.run_id, "epoch/val_accuracy")
    assert [m.step for m in history] == [1]
    trial = optuna.load_study(study_name="pruned", storage=storage).trials[-1]
    assert trial.state == TrialState.PRUNED
    # The leaderboard lists it as pruned (not ranked, not failed).
    (parent,) = [r for r in store.runs() if r.data.tags.get("sweep.role") == "parent"]
    board = store.client().download_artifacts(parent.info.run_id, "leaderboard.csv", tmp_path)
    (row,) = csv.DictReader(Path(board).read_text().splitlines())
    assert (row["run_id"], row["best"]) == (run.info.run_id, "PRUNED")
    assert "0 finished, 1 pruned, 0 failed" in done.stdout


def test_a_sweeper_asking_beyond_n_trials_fails_that_trial_and_runs_nothing(tmp_path):
    # Two sweepers both saw 0 of 1 trials and asked at once: the storage numbers them.
    first, second = open_search(tmp_path, n_trials=1), open_search(tmp_path, n_trials=1)
    kept = first._ask()
    assert kept is not None
    assert second._ask() is None  # trial 0 (first's, RUNNING) counts: its own is surplus
    launcher = FakeLauncher()
    second.run(launcher)
    assert launcher.jobs == []
    trials = first.study.get_trials()
    assert [(t.number, t.state) for t in trials] == [(0, TrialState.RUNNING), (1, TrialState.FAIL)]
    assert trials[1].user_attrs == {search.SURPLUS_ATTR: True}


@pytest.mark.slow
def test_two_sweepers_started_together_share_one_study_without_duplicates(
    tmp_path, store, mnist_npz
):
    storage = f"sqlite:///{tmp_path / 'shared-optuna.db'}"
    common = [
        "-m",
        "+sweep=optuna_mlp",
        "hydra.sweeper.study_name=shared",
        f"hydra.sweeper.storage={storage}",
        "hydra.sweeper.n_trials=4",
        "hydra.sweeper.n_jobs=1",
        "train.batch_size=128",
        AROUND_TRAINING,
        "train.epochs=1",
        "train.verbose=0",
        f"data.path={mnist_npz}",
        *store.overrides,
    ]
    sweepers = [
        subprocess.Popen(
            [sys.executable, "-m", "mnist_exp.run", *common, f"hydra.sweep.dir={tmp_path / name}"],
            cwd=tmp_path,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for name in ("sweep-a", "sweep-b")
    ]
    for sweeper in sweepers:
        _, stderr = sweeper.communicate(timeout=600)
        assert sweeper.returncode == 0, stderr[-3000:]

    trials = optuna.load_study(study_name="shared", storage=storage).get_trials()
    done = [t for t in trials if t.state in (TrialState.COMPLETE, TrialState.PRUNED)]
    assert len(done) == 4  # exactly n_trials, between the two of them
    # Anything else is a trial asked for in a race for the last slot, never run.
    assert all(t.user_attrs.get(search.SURPLUS_ATTR) for t in trials if t not in done)
    # Each trial ran once, as one job of one sweeper, and both sweepers took part.
    jobs = {
        name: sorted(p.parent.name for p in (tmp_path / name).glob("*/.hydra"))
        for name in ("sweep-a", "sweep-b")
    }
    assert sorted(jobs["sweep-a"] + jobs["sweep-b"], key=int) == [str(t.number) for t in done]
    assert all(jobs.values()), jobs
    runs = store.runs()
    parents = {r.info.run_id for r in runs if r.data.tags.get("sweep.role") == "parent"}
    kids = [r for r in runs if r.data.tags.get("mlflow.parentRunId") in parents]
    assert len(kids) == len(runs) - len(parents)  # every other run is a sweeper's child
    assert sorted(int(kid.data.tags["sweep.trial"]) for kid in kids) == [t.number for t in done]
    assert all(kid.info.status == "FINISHED" for kid in kids)
    values = {t.number: t.value for t in done if t.state == TrialState.COMPLETE}
    for kid in kids:
        if int(kid.data.tags["sweep.trial"]) in values:
            assert (
                kid.data.metrics["final/val_accuracy"] == values[int(kid.data.tags["sweep.trial"])]
            )


def test_optuna_dashboard_shows_a_study_on_loopback(tmp_path):
    storage = f"sqlite:///{tmp_path / 'optuna.db'}"
    study = optuna.create_study(study_name="watched", storage=storage, direction="maximize")
    study.add_trial(optuna.trial.create_trial(value=0.9, intermediate_values={1: 0.8}))
    port = free_port()
    command = str(Path(sys.executable).parent / "optuna-dashboard")
    dashboard = subprocess.Popen(
        [command, storage, "--host", "127.0.0.1", "--port", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        start_new_session=True,
    )
    url = f"http://127.0.0.1:{port}/api/studies"
    try:
        wait_until(
            lambda: answers(url), dashboard, lambda: dashboard.stderr.read().decode(), "dashboard"
        )
        with urllib.request.urlopen(url, timeout=10) as reply:
            studies = json.load(reply)["study_summaries"]
    finally:
        stop_process_group(dashboard)
    assert [s["study_name"] for s in studies] == ["watched"]


def test_after_its_last_epoch_a_trial_completes_whatever_the_pruner_says(tmp_path, monkeypatch):
    storage = f"sqlite:///{tmp_path / 'optuna.db'}"
    study = optuna.create_study(study_name="s", storage=storage, direction="maximize")
    for _ in range(5):  # perfect after epoch 1: the median pruner stops anything worse
        study.add_trial(optuna.trial.create_trial(value=1.0, intermediate_values={1: 1}))
    monkeypatch.setenv(search.STORAGE_ENV, storage)
    monkeypatch.setenv(search.STUDY_ENV, "s")
    monkeypatch.setenv(search.PRUNER_ENV, "median")
    verdicts = []
    for last in (False, True):
        monkeypatch.setenv(TRIAL_ENV, str(study.ask().number))
        verdicts.append(
            search.trial_pruning(SweepContext.from_environment(os.environ))(0.1, 1, last)
        )
    assert verdicts == [True, False]  # pruned with epochs to go; after the last, complete
    assert [t.intermediate_values for t in study.get_trials()[5:]] == [{1: 0.1}, {1: 0.1}]


class BrokenLauncher(FakeLauncher):
    """A launcher whose workers die (as joblib's TerminatedWorkerError or a lost Ray node)."""

    def launch(self, job_overrides: Sequence[Sequence[str]], initial_job_idx: int) -> list:
        """Fail the whole batch."""
        raise RuntimeError("a worker died")


def test_a_batch_the_launcher_loses_is_failed_in_the_study_not_left_running(tmp_path):
    running = open_search(tmp_path, n_trials=3, n_jobs=2)
    with pytest.raises(RuntimeError, match="a worker died"):
        running.run(BrokenLauncher())
    assert [t.state for t in running.study.get_trials()] == [TrialState.FAIL] * 2
