"""A team's setup on loopback: PostgreSQL, an MLflow tracking server on it with proxied
artifacts, a Ray cluster head, and a sweep whose jobs run as Ray tasks and log to the server.

Everything is real and started here on free 127.0.0.1 ports, and stopped afterwards. Only
the "other machines" are this machine: the Ray head is started apart from the sweep (as
`ray start --head` on a cluster), so the jobs run in Ray's worker processes, with the
tracking URI sent by the launcher, not inherited from the test.
"""

from __future__ import annotations

import importlib.util
import os
import secrets
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import free_port, mlflow_on_loopback, run_cli, stop_process_group, wait_until
from mlflow import MlflowClient

BIN = Path(sys.executable).parent
POSTGRES_BIN = next(iter(sorted(Path("/usr/lib/postgresql").glob("*/bin"), reverse=True)), None)
MODEL_NAME = "cluster-mnist"

pytestmark = pytest.mark.skipif(
    (POSTGRES_BIN is None or not (BIN / "ray").exists() or not importlib.util.find_spec("psycopg2"))
    and not os.environ.get("MNIST_EXP_REQUIRE_CLUSTER"),
    reason="needs PostgreSQL (apt-get install postgresql) and Ray (pip install -e '.[cluster]')",
)


def _as_postgres(command: list[str]) -> list[str]:
    """PostgreSQL refuses to run as root: run its tools as the postgres user then."""
    return ["runuser", "-u", "postgres", "--", *command] if os.geteuid() == 0 else command


def _run_postgres_tool(command: list[str], log: Path) -> None:
    done = subprocess.run(_as_postgres(command), capture_output=True, text=True)
    server_log = log.read_text()[-2000:] if log.exists() else ""
    assert done.returncode == 0, f"{command[0]} failed: {done.stderr}\n{server_log}"


@pytest.fixture(scope="module")
def postgres() -> Iterator[str]:
    """A PostgreSQL server with a database ``mlflow``; yields its SQLAlchemy URI."""
    assert POSTGRES_BIN is not None, "PostgreSQL is not installed (apt-get install postgresql)"
    root = Path(tempfile.mkdtemp(prefix="mnist-pg-"))  # short: it holds the socket
    data, log, port = root / "data", root / "log", free_port()
    pg_ctl = [str(POSTGRES_BIN / "pg_ctl"), "-D", str(data)]
    try:
        if os.geteuid() == 0:
            shutil.chown(root, "postgres")
        initdb = [str(POSTGRES_BIN / "initdb"), "-D", str(data), "-U", "mlflow", "--auth=trust"]
        _run_postgres_tool(initdb, log)
        options = f"-p {port} -k {root} -c listen_addresses=127.0.0.1"
        _run_postgres_tool([*pg_ctl, "-l", str(log), "-o", options, "-w", "start"], log)
        createdb = [str(POSTGRES_BIN / "createdb"), "-h", "127.0.0.1", "-p", str(port)]
        _run_postgres_tool([*createdb, "-U", "mlflow", "mlflow"], log)
        yield f"postgresql+psycopg2://mlflow@127.0.0.1:{port}/mlflow"
    finally:
        subprocess.run(_as_postgres([*pg_ctl, "-m", "fast", "stop"]), capture_output=True)
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture(scope="module")
def tracking_server(postgres: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple]:
    """``mlflow server`` on PostgreSQL with proxied artifacts; yields (URL, artifact folder)."""
    artifacts = tmp_path_factory.mktemp("server-artifacts")
    server = ["server", "--backend-store-uri", postgres, "--workers", "1"]
    server += ["--artifacts-destination", artifacts.as_uri()]
    with mlflow_on_loopback(server, "/health") as url:
        yield url, artifacts


# Ray listens on every interface; its token authentication keeps strangers out. The head
# and every client (the sweep) need the same token.
RAY_AUTH = {"RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": secrets.token_hex(32)}


@pytest.fixture(scope="module")
def ray_head(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A Ray cluster head (``ray start --head``) with token auth; yields its address."""
    port = free_port()
    temp_dir = tempfile.mkdtemp(prefix="mnist-ray-")  # short: Ray puts sockets there
    env = {key: value for key, value in os.environ.items() if key != "MLFLOW_TRACKING_URI"}
    env.update(RAY_AUTH)
    log = Path(temp_dir) / "ray-start.log"
    output = log.open("w")
    head = subprocess.Popen(
        [
            str(BIN / "ray"),
            "start",
            "--head",
            "--block",
            f"--port={port}",
            "--num-cpus=2",
            "--include-dashboard=false",
            "--disable-usage-stats",
            f"--temp-dir={temp_dir}",
            "--object-store-memory=100000000",
        ],
        cwd=tmp_path_factory.mktemp("ray-head"),  # not where the sweep runs
        env=env,
        stdout=output,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    try:
        wait_until(lambda: "Ray runtime started" in log.read_text(), head, log.read_text, "ray")
        yield f"127.0.0.1:{port}"
    finally:
        stop_process_group(head)
        output.close()
        shutil.rmtree(temp_dir, ignore_errors=True)


@pytest.mark.slow
def test_cluster_sweep_logs_to_the_shared_server(tracking_server, ray_head, mnist_npz, tmp_path):
    url, artifacts = tracking_server
    shutil.copy(mnist_npz, tmp_path / "digits.npz")  # relative paths: as on the sweeping machine
    result = run_cli(
        [
            "-m",
            "hydra/launcher=cluster",
            "tracking=server",
            "model.dropout=0.2,0.4",
            f"hydra.launcher.ray.init.address={ray_head}",
            f"tracking.register_as={MODEL_NAME}",
            "data.path=digits.npz",
            "train.epochs=2",
            "train.backend=tensorflow",  # its thread pools are sized to a task's cores
            "hydra.sweep.dir=sweep",
        ],
        cwd=tmp_path,
        env={"MLFLOW_TRACKING_URI": url, **RAY_AUTH},
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert sorted(path.parent.name for path in (tmp_path / "sweep").glob("*/.hydra")) == ["0", "1"]

    client = MlflowClient(tracking_uri=url)
    experiment = client.get_experiment_by_name("mnist")
    assert experiment.artifact_location.startswith("mlflow-artifacts:")  # proxied by the server
    runs = client.search_runs([experiment.experiment_id])
    (parent,) = [run for run in runs if run.data.tags.get("sweep.role") == "parent"]
    children = [run for run in runs if run is not parent]
    assert parent.info.status == "FINISHED"
    assert parent.data.metrics["sweep/finished_runs"] == 2
    assert {child.data.tags["mlflow.parentRunId"] for child in children} == {parent.info.run_id}
    assert sorted(child.data.params["model.dropout"] for child in children) == ["0.2", "0.4"]

    # The jobs ran as Ray tasks on the head's node, one core each.
    node_ids = {child.data.tags.get("ray.node_id") for child in children}
    assert len(node_ids) == 1 and None not in node_ids
    assert {child.data.tags["threads.intra_op"] for child in children} == {"1"}
    for child in children:
        assert child.info.status == "FINISHED"
        assert len(client.get_metric_history(child.info.run_id, "epoch/val_accuracy")) == 2
        assert 0 < child.data.metrics["final/test_accuracy"] <= 1
        logged = {entry.path for entry in client.list_artifacts(child.info.run_id, "report")}
        assert "report/confusion_matrix.png" in logged
    # Models went through the server into its artifact storage...
    assert len(list(artifacts.rglob("MLmodel"))) >= 2
    # ...and the best one is registered, and evaluates from the registry to the same score.
    best = next(child for child in children if child.info.run_id == parent.data.tags["best_run_id"])
    (version,) = client.search_model_versions(f"name = '{MODEL_NAME}'")
    assert version.run_id == best.info.run_id
    evaluated = run_cli(
        [
            f"model_uri=models:/{MODEL_NAME}/{version.version}",
            "tracking=server",
            f"data.path={mnist_npz}",
        ],
        cwd=tmp_path,
        env={"MLFLOW_TRACKING_URI": url},
        module="mnist_exp.evaluate",
    )
    assert evaluated.returncode == 0, evaluated.stderr[-3000:]
    (evaluation,) = client.search_runs(
        [experiment.experiment_id], "tags.`mnist_exp.kind` = 'evaluation'"
    )
    assert (
        evaluation.data.metrics["final/test_accuracy"] == best.data.metrics["final/test_accuracy"]
    )


@pytest.fixture(scope="module")
def optuna_storage(postgres: str) -> str:
    """A database ``optuna`` of its own on the test's PostgreSQL server; yields its URL."""
    import psycopg2

    connection = psycopg2.connect(postgres.replace("postgresql+psycopg2://", "postgresql://"))
    try:
        connection.autocommit = True  # CREATE DATABASE cannot run in a transaction
        with connection.cursor() as cursor:
            cursor.execute("CREATE DATABASE optuna")
    finally:
        connection.close()
    return postgres.rsplit("/", 1)[0] + "/optuna"


@pytest.mark.slow
def test_cluster_optuna_study_in_postgres_prunes_trials_from_ray_workers(
    tracking_server, ray_head, optuna_storage, mnist_npz, tmp_path
):
    import optuna
    from optuna.trial import TrialState

    url, _ = tracking_server
    # 5 earlier trials, perfect after every epoch: the median pruner stops the 2 new ones
    # after their first epoch, which Ray's workers report to the study in PostgreSQL.
    study = optuna.create_study(study_name="cluster", storage=optuna_storage, direction="maximize")
    for _ in range(5):
        study.add_trial(optuna.trial.create_trial(value=1.0, intermediate_values={1: 1, 2: 1}))
    shutil.copy(mnist_npz, tmp_path / "digits.npz")
    result = run_cli(
        [
            "-m",
            "+sweep=optuna_mlp",
            "hydra/launcher=cluster",
            "tracking=server",
            "tracking.experiment=cluster-optuna",  # apart from the grid sweep's runs
            f"hydra.launcher.ray.init.address={ray_head}",
            f"hydra.sweeper.storage={optuna_storage}",
            "hydra.sweeper.study_name=cluster",
            "hydra.sweeper.n_trials=7",
            "train.batch_size=128",
            "data.path=digits.npz",
            "train.epochs=2",
            "train.verbose=0",
            "hydra.sweep.dir=sweep",
        ],
        cwd=tmp_path,
        env={"MLFLOW_TRACKING_URI": url, **RAY_AUTH},
    )
    assert result.returncode == 0, result.stderr[-3000:]

    trials = optuna.load_study(study_name="cluster", storage=optuna_storage).get_trials()[5:]
    assert [t.state for t in trials] == [TrialState.PRUNED] * 2
    assert [set(t.intermediate_values) for t in trials] == [{1}, {1}]

    client = MlflowClient(tracking_uri=url)
    experiment = client.get_experiment_by_name("cluster-optuna")
    runs = client.search_runs([experiment.experiment_id])
    (parent,) = [run for run in runs if run.data.tags.get("sweep.role") == "parent"]
    children = [run for run in runs if run is not parent]
    assert parent.info.status == "FINISHED"
    assert {child.data.tags["mlflow.parentRunId"] for child in children} == {parent.info.run_id}
    assert sorted(child.data.tags["sweep.trial"] for child in children) == ["5", "6"]
    assert None not in {child.data.tags.get("ray.node_id") for child in children}
    for child in children:  # stopped after epoch 1 of 2, its run complete and marked pruned
        assert child.info.status == "FINISHED"
        assert child.data.tags["sweep.trial_state"] == "PRUNED"
        assert len(client.get_metric_history(child.info.run_id, "epoch/val_accuracy")) == 1
        assert "final/test_accuracy" in child.data.metrics
