"""The store's failures are one line naming it: bad tracking URIs, files that are not
stores, corrupt or outdated stores, read-only folders; and models too big to build."""

from __future__ import annotations

import importlib.util
import shlex
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import EXAMPLES, one_line_error, run_cli
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from omegaconf import OmegaConf

from mnist_exp.config.schema import ConfigError
from mnist_exp.tracking.preflight import check_store
from mnist_exp.tracking.recorder import open_experiment
from mnist_exp.tracking.store import StoreError, ui_command, ui_link

DRIVERLESS = [
    uri
    for uri, driver in (
        ("postgresql://mlflow:secret@127.0.0.1:5432/mlflow", "psycopg"),
        ("mysql://mlflow:secret@127.0.0.1/mlflow", "MySQLdb"),
    )
    if importlib.util.find_spec(driver) is None
]


def uri_error(tmp_path: Path, uri: str, *overrides: str) -> str:
    """The one-line error of a run with ``tracking.uri=uri``; no password in it."""
    line = one_line_error(tmp_path, f"tracking.uri='{uri}'", *overrides)
    assert "secret" not in line
    return line


@pytest.mark.parametrize(
    ("uri", "says"),
    [
        ("sqlite://", "no database file (an in-memory store loses every run)"),
        ("sqlite:///", "no database file"),
        ("sqlite:///:memory:", "no database file"),
        ("", "tracking.uri is empty"),
        ("file:///tmp/mlruns", "MLflow's file store is not supported"),
        ("mlruns", "MLflow's file store is not supported"),
        ("s3://bucket/store", "unsupported scheme 's3'"),
        *[(uri, "the database driver") for uri in DRIVERLESS],
    ],
)
def test_a_tracking_uri_that_cannot_keep_runs_is_refused_before_training(tmp_path, uri, says):
    line = uri_error(tmp_path, uri)
    assert says in line
    assert "sqlite:///outputs/mlflow.db" in line or "tracking.uri=" in line


@pytest.mark.parametrize("uri", ["databricks", "databricks://my-profile"])
def test_databricks_is_not_taken_for_a_file_store(uri):
    check_store(uri)  # MLflow's own name for Databricks' hosted tracking: accepted as is


@pytest.fixture
def new_store(tmp_path) -> Path:
    """A real MLflow store (a SQLite file) with the experiment in it, created by another
    process: MLflow checks a store once per process, when it first opens it."""
    path = tmp_path / "mlflow.db"
    create = (
        "from mlflow import MlflowClient as C; import sys; C(sys.argv[1]).create_experiment('x')"
    )
    subprocess.run([sys.executable, "-c", create, f"sqlite:///{path}"], check=True)
    return path


def _tracking(path: Path):
    return OmegaConf.create(
        {"uri": f"sqlite:///{path}", "experiment": "mnist", "artifact_location": None}
    )


def test_a_file_that_is_not_a_database_is_refused_before_anything_heavy(tmp_path):
    path = tmp_path / "random.db"
    path.write_bytes(bytes(range(256)) * 64)
    with pytest.raises(StoreError, match="not an MLflow store"):
        check_store(f"sqlite:///{path}")
    with pytest.raises(StoreError, match="is a folder"):
        check_store(f"sqlite:///{tmp_path}")


@pytest.mark.slow
def test_a_truncated_store_is_one_line_on_the_cli(tmp_path, new_store, mnist_npz):
    data = new_store.read_bytes()
    new_store.write_bytes(data[: len(data) // 3])
    done = run_cli(
        [f"tracking.uri=sqlite:///{new_store}", f"data.path={mnist_npz}", "train.epochs=1"],
        cwd=tmp_path,
    )
    assert done.returncode == 2
    assert "Traceback" not in done.stderr
    assert done.stderr.strip().splitlines()[-1] == (
        f"error: tracking.uri=sqlite:///{new_store}: the SQLite file is corrupt or truncated; "
        "move it away (restore a backup) or point tracking.uri elsewhere"
    )
    assert "mlflow run" not in done.stdout


@pytest.mark.slow
def test_an_outdated_schema_names_the_upgrade_command(new_store):
    with sqlite3.connect(new_store) as database:
        database.execute("update alembic_version set version_num = '84291f40a231'")
    uri = f"sqlite:///{new_store}"
    with pytest.raises(StoreError) as raised:
        open_experiment(_tracking(new_store))
    assert str(raised.value) == (
        f"tracking.uri={uri}: its schema is from an older MLflow; back it up, then run: "
        f"mlflow db upgrade {uri}"
    )


def test_a_sqlite_file_of_something_else_is_not_taken_for_a_store(tmp_path):
    path = tmp_path / "other.db"
    with sqlite3.connect(path) as database:
        database.execute("create table notes (text)")
    with pytest.raises(StoreError, match=r"not an MLflow store \(it holds other tables: notes\)"):
        check_store(f"sqlite:///{path}")


@pytest.mark.slow
def test_a_read_only_store_is_one_line(tmp_path, new_store):
    folder = new_store.parent
    bind = subprocess.run(["mount", "--bind", "-o", "ro", str(folder), str(folder)], check=False)
    if bind.returncode != 0:
        pytest.skip("cannot bind-mount read-only here (needs root)")
    try:
        with pytest.raises(StoreError, match="the store and its folder must be writable"):
            open_experiment(_tracking(folder / "other.db"))
    finally:
        subprocess.run(["umount", str(folder)], check=False)


def test_a_network_too_deep_or_too_big_is_refused_in_one_line(tmp_path):
    deep = "[" + ",".join(["4"] * 1000) + "]"
    line = uri_error(tmp_path, f"sqlite:///{tmp_path}/s.db", f"model.hidden_units={deep}")
    assert line == (
        "error: model.hidden_units has 1000 items; expected a list of integers >= 1, "
        "at most 100 of them"
    )
    line = uri_error(tmp_path, f"sqlite:///{tmp_path}/s.db", "model.hidden_units=[200000,200000]")
    assert line.startswith("error: model.hidden_units=[200000, 200000]: about 40,159,200,010 ")
    assert "more than the" in line and "GiB of memory available" in line
    assert not (tmp_path / "s.db").exists()


text = st.text("abcdefghijklmnopqrstuvwxyz0123456789_./-", max_size=20)
# URIs that cannot keep runs, whatever their details.
BAD_URIS = st.one_of(
    st.builds(lambda slashes, rest: f"sqlite:{'/' * slashes}{rest}", st.integers(0, 2), text),
    st.sampled_from(["sqlite:///", "sqlite:///:memory:", ""]),
    st.builds(lambda rest: f"file:{rest}", text),
    text.filter(lambda t: t.strip() and t.strip() != "databricks"),  # a bare path: file store
    st.builds(
        lambda scheme, rest: f"{scheme}://{rest}",
        st.text("abcdefghijklmnopqrstuvwxyz", min_size=2, max_size=8).filter(
            lambda s: (
                s not in {"http", "https", "sqlite", "postgresql", "mysql", "mssql"}
                and not s.startswith("databricks")
            )
        ),
        text,
    ),
    *[st.just(uri) for uri in DRIVERLESS],
)


@pytest.mark.slow
@settings(
    max_examples=EXAMPLES,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(uri=BAD_URIS)
def test_any_tracking_uri_that_cannot_keep_runs_is_one_line_exit_2(uri, tmp_path):
    line = uri_error(tmp_path, uri)
    assert line.startswith("error: tracking.uri"), line
    assert not (tmp_path / "run" / "checkpoints").exists()


def test_check_store_accepts_what_can_keep_runs(tmp_path):
    check_store(f"sqlite:///{tmp_path / 'new.db'}")  # created on first use
    check_store("sqlite:///outputs/mlflow.db")
    with pytest.raises(ConfigError, match="no database file"):
        check_store(f"sqlite:/{tmp_path / 'new.db'}")  # two slashes: a host, no file


def test_ui_links_open_the_training_view_of_a_run_an_experiment_or_all():
    assert ui_link("sqlite:///outputs/mlflow.db", "3", "ab12") == (
        "http://127.0.0.1:5000/#/experiments/3/runs/ab12?workflowType=machine_learning"
    )
    assert ui_link("http://mlflow.lab:5000/", "3") == (
        "http://mlflow.lab:5000/#/experiments/3/runs?workflowType=machine_learning"
    )
    assert ui_link("sqlite:///x.db").endswith("/#/experiments?workflowType=machine_learning")
    sweep = ui_link("sqlite:///x.db", "3", children_of="ab12")
    assert sweep == (
        "http://127.0.0.1:5000/#/experiments/3/runs?workflowType=machine_learning"
        "&searchFilter=tags.%60mlflow.parentRunId%60%20%3D%20%27ab12%27"
        "&orderByKey=metrics.%60final%2Fval_accuracy%60&orderByAsc=false"
    )


def test_the_printed_ui_command_survives_a_path_with_spaces():
    command = ui_command("sqlite:////tmp/my runs/it's/mlflow.db")
    assert shlex.split(command) == [
        "mlflow",
        "ui",
        "--backend-store-uri",
        "sqlite:////tmp/my runs/it's/mlflow.db",
        "--host",
        "127.0.0.1",
        "--port",
        "5000",
    ]
