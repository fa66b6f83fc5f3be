"""How fast ``runs ls`` and ``load_runs`` answer on a store of 1,000 runs.

    python -m bench.runs [--runs 1000]      (or: make bench-runs)

The runs are made directly through MLflow's client, no training: each is shaped like a
real one (its config as typed params, a seed and a dropout that vary, per-epoch and
final metrics, the tags a run carries), in a temporary SQLite store, 100 of them as the
children of a sweep. Then, in this process with MLflow and pandas already imported,
``load_runs`` of the whole experiment and of one filter, and for comparison MLflow's own
paged ``search_runs`` of the same runs; and whole processes of
``python -m mnist_exp.runs ls`` (launch to exit, imports included), plain and grouped.
Results go to ``bench/results/runs.json``.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from mlflow import MlflowClient
from mlflow.entities import Metric, Param

from mnist_exp import load_runs
from mnist_exp.config.schema import RunConfig
from mnist_exp.tracking.recorder import as_typed, flatten

RESULTS = Path(__file__).resolve().parent / "results" / "runs.json"
REPEATS = 3
EPOCHS = 10


def make_store(uri: str, count: int) -> None:
    """``count`` runs shaped like real ones in the experiment ``mnist`` of ``uri``."""
    from omegaconf import OmegaConf

    client = MlflowClient(tracking_uri=uri)
    experiment = client.create_experiment("mnist")
    config = flatten(OmegaConf.structured(RunConfig))
    parent = client.create_run(experiment, run_name="sweep bench", tags={"sweep.role": "parent"})
    for number in range(count):
        tags = {
            "dataset": "mnist",
            "dataset.train_samples": "54000",
            "keras.backend": "jax",
            "device.kind": "cpu",
            "mlflow.source.git.commit": "0" * 40,
            "git.dirty": "false",
            "host": "bench",
            "pid": str(number),
        }
        if number < 100:
            tags["mlflow.parentRunId"] = parent.info.run_id
        run = client.create_run(experiment, run_name=f"run {number}", tags=tags)
        values = {
            **config,
            "seed": number % 5,
            "model.dropout": round(0.1 * (number % 7), 1),
            "model.total_params": 252170,
        }
        params = [Param(key, as_typed(value)) for key, value in values.items()]
        now = int(time.time() * 1000)
        metrics = [
            Metric(f"epoch/{name}", 0.9 + epoch / 1000, now, epoch)
            for epoch in range(1, EPOCHS + 1)
            for name in ("loss", "accuracy", "val_loss", "val_accuracy", "seconds")
        ]
        final = {"final/val_accuracy": 0.97, "final/test_accuracy": 0.975, "final/test_loss": 0.08}
        final |= {f"final/test_f1/{digit}": 0.97 for digit in range(10)}
        final |= {"time/fit_seconds": 20.0, "time/startup_seconds": 4.0}
        metrics += [Metric(name, value + number / 1e6, now, 0) for name, value in final.items()]
        client.log_batch(run.info.run_id, metrics=metrics, params=params)
        client.set_terminated(run.info.run_id)


def mlflow_search(uri: str) -> int:
    """Every run of experiment ``mnist`` through ``MlflowClient.search_runs``, a page of
    1,000 at a time; how many."""
    client = MlflowClient(tracking_uri=uri)
    experiment = client.get_experiment_by_name("mnist").experiment_id
    count, token = 0, None
    while True:
        page = client.search_runs([experiment], max_results=1000, page_token=token)
        count += len(page)
        token = page.token
        if not token:
            return count


def seconds(action) -> float:
    """The median wall time of ``REPEATS`` calls of ``action``."""
    times = []
    for _ in range(REPEATS):
        start = time.perf_counter()
        action()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def process_seconds(args: list[str], cwd: Path) -> float:
    """The median wall time of ``python -m mnist_exp.runs ARGS``, launch to exit."""

    def run() -> None:
        subprocess.run(
            [sys.executable, "-m", "mnist_exp.runs", *args],
            cwd=cwd,
            check=True,
            stdout=subprocess.DEVNULL,
        )

    return seconds(run)


def main() -> None:
    """Make the store, time the reads, print a table and write bench/results/runs.json."""
    parser = argparse.ArgumentParser(prog="python -m bench.runs")
    parser.add_argument("--runs", type=int, default=1000, help="runs in the store (1000)")
    count = parser.parse_args().runs
    with tempfile.TemporaryDirectory() as folder:
        uri = f"sqlite:///{Path(folder) / 'mlflow.db'}"
        start = time.perf_counter()
        make_store(uri, count)
        made = time.perf_counter() - start
        load_runs(uri)  # the first read also opens the database and checks its schema
        store = ["--tracking-uri", uri]
        results = {
            "runs": count,
            "store_made_seconds": round(made, 1),
            "load_runs_seconds": seconds(lambda: load_runs(uri)),
            "load_runs_where_seconds": seconds(
                lambda: load_runs(uri, where=["model.dropout=0.3", "seed>1"])
            ),
            # For comparison: the same runs through MLflow's own search, paged, in process.
            "mlflow_search_runs_seconds": seconds(lambda: mlflow_search(uri)),
            "runs_ls_process_seconds": process_seconds(["ls", *store], Path(folder)),
            "runs_ls_group_by_process_seconds": process_seconds(
                ["ls", *store, "--group-by", "model.dropout"], Path(folder)
            ),
            "python": platform.python_version(),
            "cores": platform.os.cpu_count(),
        }
    for key, value in results.items():
        print(f"{key:36} {value if not isinstance(value, float) else f'{value:.2f}'}")
    RESULTS.write_text(json.dumps(results, indent=2) + "\n")
    print(f"wrote {RESULTS}")


if __name__ == "__main__":
    main()
