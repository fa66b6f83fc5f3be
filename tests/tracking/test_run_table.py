"""load_runs and the runs commands (ls, show, diff) on a real store: a 2 x 2 seed-by-dropout
sweep and a single run, trained in this process on 600 real digits."""

from __future__ import annotations

import contextlib
import csv
import io
import json
import math
import sqlite3
import subprocess
from dataclasses import dataclass
from pathlib import Path

import pytest
from conftest import Store, in_process, mlflow_on_loopback, train_in_process

from mnist_exp import load_runs
from mnist_exp.cli.run import main as run_main
from mnist_exp.cli.runs import main as runs_main
from mnist_exp.config.schema import ConfigError
from mnist_exp.tracking.run_table import record_of, runs_frame
from mnist_exp.tracking.sqlite_runs import UnreadableStore, latest_run_tagged, read_runs

COMMON = ["train.epochs=1", "train.verbose=0", "train.checkpoint=false"]


@dataclass(frozen=True)
class Runs:
    """The store, the sweep's parent run id, and the single run's id."""

    store: Store
    parent: str
    single: str


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory, mnist_npz: Path) -> Runs:
    folder = tmp_path_factory.mktemp("run_table")
    store = Store(uri=f"sqlite:///{folder / 'mlflow.db'}", artifacts=folder / "mlartifacts")
    swept = in_process(
        run_main,
        [
            "-m",
            "seed=1,2",
            "model.dropout=0.2,0.5",
            "tracking.note=seed study",
            "tracking.tags={idea: wd}",
            f"data.path={mnist_npz}",
            f"hydra.sweep.dir={folder / 'sweep'}",
            "tracking.log_model=false",  # saves a second a job; the single run logs one
            *COMMON,
            *store.overrides,
        ],
    )
    assert swept.returncode == 0, swept.stderr
    train_in_process(
        f"data.path={mnist_npz}",
        "model.hidden_units=[64,32]",
        "tracking.tags={ticket: 42}",
        *COMMON,
        *store.overrides,
    )
    everything = store.runs()
    (parent,) = [r for r in everything if r.data.tags.get("sweep.role") == "parent"]
    return Runs(store, parent.info.run_id, everything[-1].info.run_id)


def runs_command(*args: str) -> subprocess.CompletedProcess:
    """``python -m mnist_exp.runs ARGS`` in this process: exit code and captured output."""
    stdout, stderr = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(stdout), contextlib.redirect_stderr(stderr):
        code = runs_main(list(args))
    return subprocess.CompletedProcess(args, code, stdout.getvalue(), stderr.getvalue())


def ls(runs: Runs, *args: str) -> subprocess.CompletedProcess:
    return runs_command("ls", "--tracking-uri", runs.store.uri, *args)


def test_load_runs_has_one_row_per_training_run_with_typed_config(runs):
    frame = load_runs(runs.store.uri)
    assert len(frame) == 5  # the sweep's parent is not a training run
    assert frame["run_id"].iloc[0] == runs.single  # newest first
    assert frame["seed"].dtype.kind == "i" and frame["model.dropout"].dtype.kind == "f"
    assert frame["model.batch_norm"].dtype == bool
    assert set(frame["model.hidden_units"]) == {(64, 32), (256, 128, 128)}
    assert frame["data.train_size"].tolist() == [None] * 5  # null stays None
    assert str(frame["start_time"].dtype).startswith("datetime64")
    assert frame["final/test_accuracy"].between(0, 1).all()
    assert {"final/val_accuracy", "time/fit_seconds"} <= set(frame.columns)
    assert not any(c.startswith("epoch/") for c in frame.columns)
    sweep_rows = frame[frame["sweep"] == runs.parent]
    assert len(sweep_rows) == 4
    assert set(sweep_rows["note"]) == {"seed study"}
    assert set(sweep_rows["tags.idea"]) == {"wd"}


def test_where_compares_typed_values_tags_and_metrics(runs):
    def count(*where: str) -> int:
        return len(load_runs(runs.store.uri, where=list(where)))

    assert count("model.dropout=0.2") == 2
    assert count("model.dropout=0.5", "seed=2") == 1
    assert count("model.hidden_units=[64,32]") == 1
    assert count("model.hidden_units=[64, 32]") == 1
    assert count("model.hidden_units!=[64,32]") == 4
    assert count("tags.idea=wd") == 4
    assert count("tags.ticket=42") == 1
    assert count("final/test_accuracy>=0") == 5
    assert count("final/test_accuracy>1") == 0
    assert count("train.backend=tensorflow", "seed>1", "seed<42") == 2
    assert len(load_runs(runs.store.uri, where="seed=1", sweep=runs.parent[:8])) == 2


def test_the_sqlite_reader_returns_what_mlflows_search_does(runs):
    client = runs.store.client()
    experiment = client.get_experiment_by_name("mnist").experiment_id
    searched = client.search_runs([experiment], order_by=["attributes.start_time DESC"])
    direct = read_runs(Path(runs.store.uri.removeprefix("sqlite:///")), "mnist")
    assert direct is not None
    assert [r.run_id for r in direct] == [r.info.run_id for r in searched]
    assert direct == [record_of(run) for run in searched]
    assert runs_frame(direct).equals(runs_frame([record_of(run) for run in searched]))


def test_the_sqlite_reader_steps_aside_for_a_schema_it_does_not_know(tmp_path):
    database = tmp_path / "other.db"
    with sqlite3.connect(database) as db:
        db.execute("CREATE TABLE experiments (experiment_id INTEGER, name TEXT)")
    assert read_runs(database, "mnist") is None


def test_the_sqlite_reader_finds_the_latest_run_tagged_as_mlflows_search_does(runs, tmp_path):
    client = runs.store.client()
    experiment = client.get_experiment_by_name("mnist").experiment_id
    database = Path(runs.store.uri.removeprefix("sqlite:///"))
    for tags in ({"sweep.role": "parent"}, {"idea": "wd"}, {"idea": "wd", "sweep.job_num": "2"}):
        (searched,) = client.search_runs(
            [experiment],
            filter_string=" AND ".join(f"tags.`{k}` = '{v}'" for k, v in tags.items()),
            order_by=["attributes.start_time DESC"],
            max_results=1,
        )
        assert latest_run_tagged(database, "mnist", tags) == searched.info.run_id
    assert latest_run_tagged(database, "mnist", {"sweep.role": "parent"}) == runs.parent
    assert latest_run_tagged(database, "mnist", {"idea": "wd", "ticket": "42"}) is None
    assert latest_run_tagged(database, "no such experiment", {"idea": "wd"}) is None
    assert latest_run_tagged(tmp_path / "not yet.db", "mnist", {"idea": "wd"}) is None
    other = tmp_path / "other.db"
    with sqlite3.connect(other) as db:
        db.execute("CREATE TABLE experiments (experiment_id INTEGER, name TEXT)")
    with pytest.raises(UnreadableStore):
        latest_run_tagged(other, "mnist", {"idea": "wd"})


def test_ls_table_lists_the_keys_that_differ_and_the_accuracies(runs):
    done = ls(runs)
    assert done.returncode == 0, done.stderr
    header, *rows = done.stdout.splitlines()
    assert header.split() == [
        "run",
        "name",
        "status",
        "start",
        "duration",
        "model.dropout",
        "model.hidden_units",
        "model.total_params",
        "model.trainable_params",
        "seed",
        "final/val_accuracy",
        "final/test_accuracy",
    ]
    assert len(rows) == 5
    assert rows[0].startswith(runs.single[:8]) and "[64, 32]" in rows[0]
    assert all("FINISHED" in row for row in rows)


def test_ls_csv_and_json_name_columns_by_full_key(runs):
    done = ls(runs, "--format", "csv", "--where", "model.dropout=0.5", "--sort", "seed", "--asc")
    assert done.returncode == 0, done.stderr
    header, *rows = list(csv.reader(io.StringIO(done.stdout)))
    assert header[:5] == ["run_id", "run_name", "status", "start_time", "duration"]
    assert {"seed", "final/val_accuracy", "final/test_accuracy"} <= set(header)
    assert [row[header.index("seed")] for row in rows] == ["1", "2", "42"]  # lowest first
    assert all(len(row[0]) == 32 for row in rows)
    listed = json.loads(ls(runs, "--format", "json", "--limit", "2").stdout)
    assert len(listed) == 2 and listed[0]["run_id"] == runs.single
    assert listed[0]["model.hidden_units"] == [64, 32]
    assert 0 <= listed[0]["final/test_accuracy"] <= 1


def test_ls_group_by_gives_count_and_mean_std_per_value(runs):
    done = ls(runs, "--sweep", runs.parent[:8], "--group-by", "model.dropout")
    assert done.returncode == 0, done.stderr
    header, *rows = done.stdout.splitlines()
    assert header.split()[:2] == ["model.dropout", "runs"]
    assert sorted(row.split()[:2] for row in rows) == [["0.2", "2"], ["0.5", "2"]]
    assert all("±" in row for row in rows)
    frame = load_runs(runs.store.uri, where="model.dropout=0.2", sweep=runs.parent)
    values = frame["final/val_accuracy"].tolist()
    mean = sum(values) / 2
    std = math.sqrt(sum((v - mean) ** 2 for v in values))
    row = next(r for r in rows if r.startswith("0.2"))
    assert f"{mean:.4f} ± {std:.4f}" in row
    grouped = json.loads(ls(runs, "--group-by", "seed", "--format", "json").stdout)
    assert {g["seed"]: g["runs"] for g in grouped} == {1: 2, 2: 2, 42: 1}


def test_show_puts_one_run_on_one_screen(runs):
    child = load_runs(runs.store.uri, sweep=runs.parent, where="seed=1").iloc[0]
    done = runs_command("show", child["run_id"][:6], "--tracking-uri", runs.store.uri)
    assert done.returncode == 0, done.stderr
    text = done.stdout
    assert f"run        {child['run_id']}" in text
    assert "note       seed study" in text and f"sweep      {runs.parent}" in text
    assert "final/test_accuracy" in text and "training" in text and "digest" in text
    assert "idea" in text and "  seed: 1" in text and "hidden_units: [256, 128, 128]" in text
    commands = text.split("\ncommands\n", 1)[1]
    assert f"python -m mnist_exp.run rerun={child['run_id']}" in commands
    assert "resume" not in commands  # a finished run cannot be resumed
    assert "evaluate" not in commands  # it logged no model
    single = runs_command("show", runs.single, "--tracking-uri", runs.store.uri).stdout
    assert f"python -m mnist_exp.evaluate run_id={runs.single}" in single
    assert f"python -m mnist_exp.predict {runs.single} IMAGE" in single


def test_diff_lists_only_what_differs(runs):
    frame = load_runs(runs.store.uri, sweep=runs.parent, where="seed=1")
    first, second = frame["run_id"]
    done = runs_command("diff", first, second, runs.single, "--tracking-uri", runs.store.uri)
    assert done.returncode == 0, done.stderr
    config = done.stdout.split("\nmetrics\n")[0]
    assert "model.dropout" in config and "model.hidden_units" in config
    assert "optimizer.learning_rate" not in config and "train.epochs" not in config
    metrics = done.stdout.split("\nmetrics\n")[1].split("\nprovenance")[0]
    assert "final/test_accuracy" in metrics and f"Δ {second[:8]}" in metrics
    assert "provenance: " in done.stdout


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["ls", "--where", "model.nothing=1"], "no run has the key 'model.nothing'"),
        (["ls", "--where", "model.droput=0.2"], "did you mean model.dropout"),
        (["ls", "--where", "model.dropout"], "expected KEY=VALUE"),
        (["ls", "--where", "final/test_accuracy>high"], "compares numbers"),
        (["ls", "--experiment", "nope"], "no experiment 'nope'"),
        (["ls", "--sweep", "ffffffff"], "no sweep parent run"),
        (["ls", "--group-by", "model.nothing"], "no run has the key"),
        (["ls", "--status", "DONE"], "expected one of RUNNING"),
        (["show", "0123456789abcdef0123456789abcdef"], "no run 0123456789abcdef"),
        (["show", "zz"], "is not a run id"),
        (["diff", "ffff", "eeee"], "no run whose id starts with ffff"),
    ],
)
def test_bad_input_is_one_line_and_exit_2(runs, args, expected):
    done = runs_command(*args, "--tracking-uri", runs.store.uri)
    assert done.returncode == 2
    lines = done.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and expected in lines[0], lines


def test_an_empty_or_missing_store_is_one_line(tmp_path):
    missing = runs_command("ls", "--tracking-uri", f"sqlite:///{tmp_path}/no.db")
    assert missing.returncode == 2 and "no MLflow store at" in missing.stderr
    with pytest.raises(ConfigError, match="no MLflow store"):
        load_runs(f"sqlite:///{tmp_path}/no.db")
    empty = Store(uri=f"sqlite:///{tmp_path / 'empty.db'}", artifacts=tmp_path / "art")
    empty.client().create_experiment("mnist")
    done = runs_command("ls", "--tracking-uri", empty.uri)
    assert done.returncode == 2
    assert done.stderr.splitlines() == [
        f"error: no training runs in experiment 'mnist' of {empty.uri} yet"
    ]


@pytest.mark.slow
def test_ls_and_show_read_a_tracking_server_as_they_read_its_store(runs):
    """The same store served by a real ``mlflow server`` on 127.0.0.1: MLflow's paged
    search there gives the same table as the direct read of the SQLite file."""
    server = ["server", "--backend-store-uri", runs.store.uri, "--workers", "1"]
    with mlflow_on_loopback(server, "/health") as url:
        assert load_runs(url).equals(load_runs(runs.store.uri))
        done = runs_command("ls", "--tracking-uri", url, "--group-by", "seed", "--format", "csv")
        assert done.returncode == 0, done.stderr
        assert done.stdout == ls(runs, "--group-by", "seed", "--format", "csv").stdout
        shown = runs_command("show", runs.single[:8], "--tracking-uri", url)
        assert shown.returncode == 0 and "hidden_units: [64, 32]" in shown.stdout
