"""Sweeps in subprocesses: grid, seeds, Optuna and joblib, each one parent run in MLflow."""

from __future__ import annotations

import csv
import io
import os
import shlex
import signal
import subprocess

import pytest
from conftest import (
    AROUND_TRAINING,
    finish,
    interrupt_during_training,
    run_cli,
    start,
    wait_for_line,
)
from hydra.core.override_parser.overrides_parser import OverridesParser
from omegaconf import DictConfig, OmegaConf

from mnist_exp.config.schema import ConfigError
from mnist_exp.pipeline.sweep import (
    PARENT_RUN_ENV,
    PRUNER_ENV,
    RESUMED_ENV,
    STORAGE_ENV,
    STUDY_ENV,
    TRIAL_ENV,
    VARIES_ENV,
    SweepContext,
    config_digest,
    job_run_name,
    override_value,
    sweep_fingerprint,
)

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


@pytest.fixture
def sweep(tmp_path, store, mnist_npz):
    """Run ``python -m mnist_exp.run -m ARGS`` on tiny data into ``store``; return a helper."""

    def _sweep(*args: str, sweep_dir: str = "sweep") -> subprocess.CompletedProcess:
        return run_cli(
            [
                "-m",
                *args,
                "train.epochs=1",
                "train.verbose=0",
                "train.checkpoint=false",  # no test here resumes
                f"data.path={mnist_npz}",
                f"hydra.sweep.dir={tmp_path / sweep_dir}",
                *store.overrides,
            ],
            cwd=tmp_path,
        )

    return _sweep


def tree(store):
    """The store's runs as (parents, {parent_id: [children]})."""
    runs = store.runs()
    parents = [r for r in runs if r.data.tags.get("sweep.role") == "parent"]
    children = {
        p.info.run_id: [r for r in runs if r.data.tags.get("mlflow.parentRunId") == p.info.run_id]
        for p in parents
    }
    return parents, children


def artifact_text(store, run_id: str, path: str, tmp_path) -> str:
    local = store.client().download_artifacts(run_id, path, str(tmp_path))
    with open(local, "rb") as handle:
        return handle.read().decode("utf-8", errors="replace")


@pytest.mark.slow
def test_grid_sweep_is_one_parent_with_ranked_children(tmp_path, store, sweep):
    done = sweep("model.dropout=0.2,0.5", "tracking.register_as=sweep-best")
    assert done.returncode == 0, done.stderr
    (parent,), children = tree(store)
    kids = children[parent.info.run_id]
    assert parent.info.status == "FINISHED"
    assert [kid.info.status for kid in kids] == ["FINISHED", "FINISHED"]
    assert set(kids[0].data.params) == set(kids[1].data.params)
    assert sorted(kid.data.params["model.dropout"] for kid in kids) == ["0.2", "0.5"]
    # Named by what the sweep varies; the parent by its folder and that, with its source.
    assert sorted(kid.info.run_name for kid in kids) == ["dropout=0.2", "dropout=0.5"]
    assert parent.info.run_name.endswith(" (dropout)")
    assert parent.data.tags["mlflow.source.name"].endswith("run.py")

    best = max(kids, key=lambda kid: kid.data.metrics["final/val_accuracy"])
    assert [kid.data.tags.get("sweep.best") for kid in kids if kid is not best] == [None]
    assert best.data.tags["sweep.best"] == "true"
    assert parent.data.tags["best_run_id"] == best.info.run_id

    artifacts = {a.path for a in store.client().list_artifacts(parent.info.run_id)}
    assert {
        "leaderboard.csv",
        "leaderboard.md",
        "objective_vs_params.png",
        "sweep.yaml",
    } <= artifacts
    rows = list(
        csv.DictReader(
            io.StringIO(artifact_text(store, parent.info.run_id, "leaderboard.csv", tmp_path))
        )
    )
    assert next(row["run_id"] for row in rows) == best.info.run_id
    assert [row["best"] for row in rows] == ["*", ""]
    assert {row["model.dropout"] for row in rows} == {"0.2", "0.5"}
    assert [row["run"] for row in rows] == [
        next(kid.info.run_name for kid in kids if kid.info.run_id == row["run_id"]) for row in rows
    ]
    png = store.client().download_artifacts(
        parent.info.run_id, "objective_vs_params.png", str(tmp_path)
    )
    with open(png, "rb") as handle:
        assert handle.read(8) == PNG_MAGIC
    # The sweep registered its best child's model (and only that one).
    (version,) = store.client().search_model_versions("name='sweep-best'")
    assert (int(version.version), version.run_id) == (1, best.info.run_id)
    assert "registered   models:/sweep-best/1" in done.stdout
    assert "Successfully registered" not in done.stderr  # the summary says it
    # The terminal shows the same leaderboard, by run name, and the UI once.
    assert f"best run     {best.info.run_id}" in done.stdout
    assert f"*     {best.info.run_name}" in done.stdout and "val_accuracy" in done.stdout
    assert done.stdout.count("open the UI") == 1
    assert f"%60mlflow.parentRunId%60%20%3D%20%27{parent.info.run_id}%27" in done.stdout


@pytest.mark.slow
def test_bad_value_anywhere_in_a_grid_stops_the_sweep_before_any_job(tmp_path, store, sweep):
    done = sweep("model.dropout=0.2,1.5")
    assert done.returncode == 2
    assert (
        done.stderr.strip().splitlines()[-1].startswith("error: model.dropout=1.5 is not allowed")
    )
    assert store.runs() == []


@pytest.mark.slow
def test_joblib_runs_parallel_jobs_into_a_fresh_store_losing_nothing(store, sweep):
    n_jobs = 2
    dropouts = ",".join(f"0.{i + 1}" for i in range(n_jobs))  # as many jobs as workers
    done = sweep(
        f"model.dropout={dropouts}",
        "hydra/launcher=joblib",
        f"hydra.launcher.n_jobs={n_jobs}",
        "tracking.log_model=false",
        "train.backend=tensorflow",  # its thread pools are sized to the workers
    )
    assert done.returncode == 0, done.stderr
    (parent,), children = tree(store)
    kids = children[parent.info.run_id]
    assert sorted(kid.info.status for kid in kids) == ["FINISHED"] * n_jobs
    client = store.client()
    for kid in kids:
        assert {
            "epoch/loss",
            "epoch/accuracy",
            "epoch/val_loss",
            "epoch/val_accuracy",
            "final/test_accuracy",
            "final/val_accuracy",
        } <= set(kid.data.metrics)
        assert len(client.get_metric_history(kid.info.run_id, "epoch/val_loss")) == 1
        # jobs x threads ~ cores: each job gets cores // n_jobs intra-op threads.
        assert kid.data.tags["threads.intra_op"] == str(max(1, (os.cpu_count() or 1) // n_jobs))
        assert kid.data.tags["threads.inter_op"] == "1"


@pytest.mark.slow
@pytest.mark.parametrize(
    "launcher", [[], ["hydra/launcher=joblib"]], ids=["first-job-of-a-grid", "joblib"]
)
def test_ctrl_c_during_a_sweep_leaves_no_run_running(tmp_path, store, mnist_npz, launcher):
    # Sequential: Ctrl-C in the first job, which created the parent as it started training
    # (and in a later job: test_a_sweep_stopped_with_ctrl_c_is_finished_by_running_it_again).
    code, stderr = interrupt_during_training(
        [
            "-m",
            "model.dropout=0.2,0.5",
            *launcher,
            f"data.path={mnist_npz}",
            f"hydra.sweep.dir={tmp_path / 's'}",
            *store.overrides,
        ],
        cwd=tmp_path,
    )
    assert code == 130, stderr
    assert "RUNNING" not in {run.info.status for run in store.runs()}
    (parent,), children = tree(store)
    assert parent.info.status == "KILLED"
    assert {kid.info.status for kid in children[parent.info.run_id]} == {"KILLED"}
    assert f"sweep parent run {parent.info.run_id} marked KILLED" in stderr


def started_after(kids: list, moment: int) -> list:
    return [kid for kid in kids if kid.info.start_time > moment]


@pytest.mark.slow
def test_a_diverging_job_fails_alone_and_a_rerun_of_the_grid_trains_only_it_again(
    tmp_path, store, sweep
):
    # 2 jobs, the one at learning rate 1e6 diverges: an interrupted sweep's missing work.
    grid = ("optimizer=sgd", "optimizer.learning_rate=0.01,1e6", "tracking.log_model=false")
    first = sweep(*grid, sweep_dir="first")
    assert first.returncode == 0, first.stderr
    (parent,), children = tree(store)
    before = children[parent.info.run_id]
    by_rate = {kid.data.params["optimizer.learning_rate"]: kid for kid in before}
    assert by_rate["0.01"].info.status == "FINISHED"
    failed = by_rate["1000000.0"]
    assert failed.info.status == "FAILED"
    # TensorFlow's loss becomes NaN; on JAX (auto's choice here) it stays finite, at chance.
    assert failed.data.tags["failure_reason"] in {"nan_loss", "diverged"}
    assert "1 finished, 1 failed" in first.stdout
    assert failed.info.run_id in first.stdout
    assert parent.data.tags["best_run_id"] == by_rate["0.01"].info.run_id
    assert len({kid.data.tags["sweep.config_digest"] for kid in before}) == 2

    again = sweep(*grid, sweep_dir="again")
    assert again.returncode == 0, again.stderr
    (same,), children = tree(store)
    assert same.info.run_id == parent.info.run_id and same.info.status == "FINISHED"
    kids = children[parent.info.run_id]
    # Only the failed config trained again (and failed again); the finished one was skipped.
    (rerun,) = started_after(kids, max(kid.info.start_time for kid in before))
    assert rerun.data.tags["sweep.config_digest"] == failed.data.tags["sweep.config_digest"]
    assert again.stdout.count("skipped, run ") == 1
    assert "1 finished (1 skipped: finished in an earlier run of this sweep), 1 failed" in (
        again.stdout
    )
    assert same.data.tags["sweep.skipped_jobs"] == "1"
    # The leaderboard lists each config once: the finished run and the latest failure.
    rows = list(
        csv.DictReader(
            io.StringIO(artifact_text(store, same.info.run_id, "leaderboard.csv", tmp_path))
        )
    )
    assert {row["run_id"] for row in rows} == {by_rate["0.01"].info.run_id, rerun.info.run_id}


@pytest.mark.slow
def test_a_seed_sweep_reports_mean_and_std_its_rerun_skips_all_unless_fresh(tmp_path, store, sweep):
    args = (
        "+sweep=seeds",
        "hydra.sweeper.params.seed='1,2'",
        "tracking.log_model=false",
        AROUND_TRAINING,
    )
    first = sweep(*args, sweep_dir="first")
    assert first.returncode == 0, first.stderr
    assert "Mean ± std over seeds:" in first.stdout
    (parent,), children = tree(store)
    assert sorted(kid.data.params["seed"] for kid in children[parent.info.run_id]) == ["1", "2"]
    markdown = artifact_text(store, parent.info.run_id, "leaderboard.md", tmp_path)
    assert "## Mean ± std over seeds" in markdown and "| 2 |" in markdown

    # The launcher is not part of the sweep's identity: joblib workers skip jobs too (the
    # basic launcher skips in the grid and Ctrl-C tests).
    again = sweep(*args, "hydra/launcher=joblib", sweep_dir="again")
    assert again.returncode == 0, again.stderr
    (parent,), children = tree(store)
    assert len(children[parent.info.run_id]) == 2  # nothing trained again
    assert "2 finished (2 skipped: finished in an earlier run of this sweep), 0 failed" in (
        again.stdout
    )
    assert "Mean ± std over seeds:" in again.stdout
    assert f"best run     {parent.data.tags['best_run_id']}" in again.stdout

    # sweep_fresh=true: a new parent, every job trained again.
    fresh = sweep(*args, "sweep_fresh=true", sweep_dir="fresh")
    assert fresh.returncode == 0, fresh.stderr
    parents, children = tree(store)
    (new,) = [p for p in parents if p.info.run_id != parent.info.run_id]
    assert len(children[new.info.run_id]) == 2
    assert "skipped" not in fresh.stdout
    assert new.data.tags["sweep.skipped_jobs"] == "0"


def sweep_config(task: list[str], params: dict[str, str] | None = None) -> DictConfig:
    """Just the ``hydra`` keys that :func:`sweep_fingerprint` reads."""
    return OmegaConf.create({"hydra": {"overrides": {"task": task}, "sweeper": {"params": params}}})


@pytest.mark.parametrize(
    ("varies", "trial", "overrides", "name"),
    [
        (
            "model.dropout,optimizer.learning_rate",
            None,
            ["model.dropout=0.5", "optimizer.learning_rate=3e-4", "train.epochs=2"],
            "dropout=0.5 lr=3e-4",
        ),
        (
            "model.hidden_units,optimizer.learning_rate",
            "7",
            ["model.hidden_units=[512,256]", "optimizer.learning_rate=0.0012345678"],
            "trial 7: units=[512,256] lr=0.00123",
        ),
        ("a.dropout,b.dropout", None, ["+a.dropout=1", "+b.dropout=2"], "a.dropout=1 b.dropout=2"),
        ("", None, ["train.epochs=2"], "job 3"),
        ("model,seed", None, ["model@model=mlp", "seed=1"], "model=mlp seed=1"),
    ],
)
def test_a_sweep_job_is_named_by_the_values_its_sweep_varies(varies, trial, overrides, name):
    env = {VARIES_ENV: varies, **({} if trial is None else {TRIAL_ENV: trial})}
    assert job_run_name(overrides, 3, SweepContext.from_environment(env)) == name
    assert job_run_name(overrides, 3, SweepContext()) is None  # not in a sweep


def test_a_jobs_sweep_context_is_read_from_what_its_sweep_set():
    env = {
        PARENT_RUN_ENV: "abc",
        VARIES_ENV: "model.dropout,seed",
        RESUMED_ENV: "1",
        TRIAL_ENV: "7",
        STORAGE_ENV: "sqlite:///optuna.db",
        STUDY_ENV: "s",
        PRUNER_ENV: "median",
        "UNRELATED": "x",
    }
    assert SweepContext.from_environment(env) == SweepContext(
        parent_run_id="abc",
        varies=("model.dropout", "seed"),
        resumed=True,
        trial="7",
        study_storage="sqlite:///optuna.db",
        study_name="s",
        pruner="median",
    )
    assert SweepContext.from_environment({}) == SweepContext()


@pytest.mark.parametrize(
    "uri",
    [
        "sqlite:////tmp/runs/mlflow.db",
        "postgresql+psycopg2://user:pw@host/db?sslmode=require",
        "sqlite:////tmp/my runs/a,b/it's.db",
    ],
)
def test_an_override_value_reads_back_as_written_through_the_shell_and_hydra(uri):
    argument = shlex.quote(f"tracking.uri={override_value(uri)}")  # as a hint prints it
    (override,) = OverridesParser.create().parse_overrides(shlex.split(argument))
    assert override.value() == uri


def test_a_sweeps_fingerprint_ignores_order_and_the_fresh_flag():
    grid = sweep_fingerprint(sweep_config(["a=1,2", "b=x"], {"seed": "1,2"}))
    fresh = ["b=x", "a=1,2", "sweep_fresh=true"]
    assert grid == sweep_fingerprint(sweep_config(fresh, {"seed": "1,2"}))
    assert grid != sweep_fingerprint(sweep_config(["b=x", "a=1,2"], {"seed": "1,2,3"}))
    assert grid != sweep_fingerprint(sweep_config(["b=y", "a=1,2"], {"seed": "1,2"}))
    assert sweep_fingerprint(sweep_config(["a=1"])) == sweep_fingerprint(sweep_config(["a=1"], {}))


def test_a_config_digest_changes_with_what_trains_not_with_the_fresh_flag(make_config):
    digest = config_digest(make_config("model.dropout=0.3"))
    assert digest == config_digest(make_config("model.dropout=0.3", "sweep_fresh=true"))
    assert digest != config_digest(make_config("model.dropout=0.5"))
    assert digest != config_digest(make_config("model.dropout=0.3", "seed=7"))


@pytest.mark.slow
def test_a_sweep_stopped_with_ctrl_c_is_finished_by_running_it_again(tmp_path, store, mnist_npz):
    args = [
        "-m",
        "model.dropout=0.2,0.5",
        "train.epochs=5",
        AROUND_TRAINING,
        f"data.path={mnist_npz}",
        *store.overrides,
    ]
    process = start([*args, f"hydra.sweep.dir={tmp_path / 'first'}"], tmp_path)
    wait_for_line(process, "sweep job 0 (dropout=0.2): test accuracy ")  # job 0 finished
    wait_for_line(process, "Epoch 2/")  # job 1 is training
    process.send_signal(signal.SIGINT)
    code, _, stderr = finish(process)
    assert code == 130, stderr[-2000:]
    (parent,), children = tree(store)
    before = children[parent.info.run_id]
    assert [kid.info.status for kid in before] == ["FINISHED", "KILLED"]
    assert parent.info.status == "KILLED"
    assert "RUNNING" not in {run.info.status for run in store.runs()}

    again = run_cli([*args, f"hydra.sweep.dir={tmp_path / 'again'}"], cwd=tmp_path)
    assert again.returncode == 0, again.stderr
    (same,), children = tree(store)
    assert same.info.run_id == parent.info.run_id
    kids = children[parent.info.run_id]
    (rerun,) = started_after(kids, before[-1].info.start_time)
    assert (rerun.data.params["model.dropout"], rerun.info.status) == ("0.5", "FINISHED")
    assert f"sweep job 0: skipped, run {before[0].info.run_id}" in again.stdout
    assert "2 finished (1 skipped: finished in an earlier run of this sweep), 0 failed" in (
        again.stdout
    )


def test_a_grid_is_the_product_of_its_keys_values_the_last_override_of_a_key_winning():
    from mnist_exp.pipeline.sweep import _grid_jobs

    config = OmegaConf.create(
        {
            "hydra": {
                "overrides": {"task": ["seed=1,2", "optimizer=adam,sgd", "seed=7,8,9"]},
                "sweeper": {"params": {"model.dropout": "0.1,0.2", "train.epochs": "range(1,3)"}},
            }
        }
    )
    jobs = _grid_jobs(config)
    assert len(jobs) == 2 * 2 * 2 * 3
    assert jobs[0] == ["model.dropout=0.1", "train.epochs=1", "seed=7", "optimizer=adam"]
    assert jobs[-1] == ["model.dropout=0.2", "train.epochs=2", "seed=9", "optimizer=sgd"]
    config.hydra.overrides.task = ["model.dropout=interval(0,1)"]
    with pytest.raises(ConfigError, match=r"interval\(\) needs hydra/sweeper=optuna"):
        _grid_jobs(config)
