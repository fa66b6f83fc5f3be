"""Nothing lost, nothing mixed up: processes that start together, resume's guards, runs
left RUNNING by a kill -9, and a disk that fills up mid-run. Real CLI processes on one
real SQLite store each."""

from __future__ import annotations

import contextlib
import signal
import subprocess
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from conftest import (
    AROUND_TRAINING,
    Store,
    finish,
    one_line_error,
    pause_at,
    run_cli,
    run_id_of,
    start,
    wait_for_line,
)

TERMINAL_STATES = {"FINISHED", "FAILED", "KILLED"}


def last_line(stderr: str) -> str:
    return stderr.strip().splitlines()[-1]


def gc(store: Store, cwd: Path, *args: str) -> subprocess.CompletedProcess:
    return run_cli(["gc", "--tracking-uri", store.uri, *args], cwd=cwd, module="mnist_exp.runs")


@pytest.mark.slow
def test_runs_and_sweeps_start_at_once_on_a_fresh_store(tmp_path, store, mnist_npz):
    """Two runs and two sweeps (4 processes) start together on a store that does not exist
    yet: none fails, each run has a folder of its own, each sweep keeps its children."""
    common = [
        f"data.path={mnist_npz}",
        AROUND_TRAINING,
        "train.epochs=1",
        "train.verbose=0",
        "tracking.log_model=false",
        *store.overrides,
    ]
    sweep = ["-m", "model.dropout=0.2,0.3"]
    processes = [
        start([*common, "seed=1"], tmp_path),
        start([*common, "seed=2"], tmp_path),
        start([*sweep, *common, "seed=3"], tmp_path),
        start([*sweep, *common, "seed=4"], tmp_path),
    ]
    results = [finish(process) for process in processes]
    assert [code for code, _, _ in results] == [0] * 4, [err[-2000:] for _, _, err in results]
    runs = store.runs()
    assert len(runs) == 2 + 2 * 3
    assert {run.info.status for run in runs} == {"FINISHED"}
    # Every run and every sweep job has a folder of its own (the defaults, relative to cwd).
    folders = {run.data.tags["output_dir"] for run in runs if "output_dir" in run.data.tags}
    assert len(folders) == 2 + 2 * 2
    assert all((tmp_path / folder / ".hydra" / "config.yaml").is_file() for folder in folders)
    parents = [run for run in runs if run.data.tags.get("sweep.role") == "parent"]
    assert len({parent.data.tags["sweep"] for parent in parents}) == 2
    for parent in parents:
        children = [
            run for run in runs if run.data.tags.get("mlflow.parentRunId") == parent.info.run_id
        ]
        assert parent.data.metrics["sweep/finished_runs"] == 2
        assert len(children) == 2
        # Each child ran in its own sweep's folder, with that sweep's seed.
        assert {child.data.tags["sweep"] for child in children} == {parent.data.tags["sweep"]}
        assert len({child.data.params["seed"] for child in children}) == 1


@pytest.mark.slow
def test_runs_started_together_resume_as_themselves_and_only_when_resumable(
    tmp_path, store, mnist_npz
):
    args = [
        f"data.path={mnist_npz}",
        AROUND_TRAINING,
        "train.epochs=6",
        "model.hidden_units=[16]",
        "tracking.log_model=false",
        *store.overrides,
    ]
    processes = [start([*args, f"seed={seed}"], tmp_path) for seed in (1, 2)]
    with ThreadPoolExecutor(2) as watchers:  # each held still once its epoch 2 is done
        list(watchers.map(lambda process: pause_at(process, "Epoch 3/6"), processes))
    interrupted, killed = processes
    by_seed = {run.data.params["seed"]: run for run in store.runs()}
    first, second = by_seed["1"], by_seed["2"]
    assert first.data.tags["output_dir"] != second.data.tags["output_dir"]
    try:
        # A run whose process is alive is not resumed.
        # (In this process: the refusal comes before any training, exit 2 in one line.)
        live = one_line_error(tmp_path, f"resume={first.info.run_id}", *store.overrides)
        assert live.startswith(
            f"error: resume={first.info.run_id}: the run is still RUNNING in process "
            f"{interrupted.pid} on "
        )
        interrupted.send_signal(signal.SIGTERM)  # like Ctrl-C: the run ends KILLED
        interrupted.send_signal(signal.SIGCONT)
        killed.kill()  # kill -9: nothing can mark the run, it stays RUNNING
    except BaseException:
        for process in processes:
            process.kill()
        raise
    assert [finish(process)[0] for process in processes] == [130, -signal.SIGKILL]
    client = store.client()
    assert client.get_run(first.info.run_id).info.status == "KILLED"
    assert client.get_run(second.info.run_id).info.status == "RUNNING"

    # The second first: it must continue the second run, not the first.
    for run, old_owner in ((second, killed), (first, interrupted)):
        done = run_cli([f"resume={run.info.run_id}", *store.overrides], cwd=tmp_path)
        assert done.returncode == 0, done.stderr[-2000:]
        assert run_id_of(done.stdout) == run.info.run_id
        resumed = client.get_run(run.info.run_id)
        assert resumed.info.status == "FINISHED"
        assert resumed.data.tags["pid"] != str(old_owner.pid)  # the new owner
        assert resumed.data.params["seed"] == run.data.params["seed"]
        steps = [m.step for m in client.get_metric_history(run.info.run_id, "epoch/val_accuracy")]
        assert steps == list(range(1, 7))
    assert len(store.runs()) == 2

    # A FINISHED run is not reopened.
    again = one_line_error(tmp_path, f"resume={first.info.run_id}", *store.overrides)
    assert again == (
        f"error: resume={first.info.run_id}: the run is FINISHED; nothing to resume "
        "(start a new run)"
    )
    assert client.get_run(first.info.run_id).info.status == "FINISHED"


@pytest.mark.slow
def test_gc_closes_a_sweep_killed_with_sigkill(tmp_path, store, mnist_npz):
    process = start(
        [
            "-m",
            f"data.path={mnist_npz}",
            AROUND_TRAINING,
            "train.epochs=50",
            "model.dropout=0.2,0.3",
            f"hydra.sweep.dir={tmp_path / 'sweep'}",
            *store.overrides,
        ],
        tmp_path,
    )
    try:
        wait_for_line(process, "Epoch 2/50")
    finally:
        process.kill()
        finish(process)
    assert {run.info.status for run in store.runs()} == {"RUNNING"}  # parent and child 0

    listed = gc(store, tmp_path, "--dry-run")
    assert listed.returncode == 0, listed.stderr
    assert listed.stdout.startswith("would close: 2 run(s) whose process is gone")
    assert {run.info.status for run in store.runs()} == {"RUNNING"}

    closed = gc(store, tmp_path)
    assert closed.returncode == 0, closed.stderr
    runs = store.runs()
    assert len(runs) == 2
    assert {run.info.status for run in runs} == {"KILLED"}
    assert {run.data.tags["closed_by"] for run in runs} == {"gc"}
    assert gc(store, tmp_path).stdout.startswith("closed (KILLED): 0 run(s)")


@pytest.fixture
def small_disk(tmp_path):
    """A 3 MiB tmpfs: room for a fresh store and a few files, not for a model checkpoint."""
    mount = tmp_path / "disk"
    mount.mkdir()
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=3m", "tmpfs", str(mount)], capture_output=True
    )
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here (needs root): {mounted.stderr.decode().strip()}")
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=False)


@pytest.mark.slow
def test_a_full_disk_ends_the_run_failed_in_one_line(small_disk, mnist_npz):
    store = Store(uri=f"sqlite:///{small_disk / 'mlflow.db'}", artifacts=small_disk / "artifacts")
    done = run_cli(
        [
            f"data.path={mnist_npz}",
            "train.epochs=2",
            f"hydra.run.dir={small_disk}/run",
            *store.overrides,
        ],
        cwd=small_disk,
    )
    assert done.returncode == 1
    assert "Traceback" not in done.stderr
    assert last_line(done.stderr).startswith(
        "error: the run failed (store_failed): no space left on the disk"
    )
    (run,) = store.runs()
    assert run.info.status == "FAILED"
    assert "No space left on device" in run.data.tags["error"]
    assert not list(small_disk.rglob("partial-*")), "a half-written checkpoint was left"


@pytest.mark.slow
def test_when_the_store_cannot_record_the_end_the_message_says_how_to_close_it(small_disk):
    from omegaconf import OmegaConf

    from mnist_exp.tracking.recorder import RunRecorder, StoreFailed

    uri = f"sqlite:///{small_disk / 'mlflow.db'}"
    experiment = OmegaConf.create({"uri": uri, "experiment": "x", "artifact_location": None})
    with pytest.raises(StoreFailed) as raised:  # noqa: SIM117 (the run is needed after)
        with RunRecorder.start(experiment, "doomed") as recorder:
            assert recorder.run_id  # open (as once training starts), before the disk fills
            filling = open(small_disk / "filler", "wb")  # noqa: SIM115
            with filling as filler, contextlib.suppress(OSError):  # the disk fills up
                while True:
                    filler.write(bytes(1 << 16))
            raise RuntimeError("the training failed")
    assert str(raised.value) == (
        f"the training failed; run {recorder.run_id} may still show RUNNING: once the store "
        "can write again, close it with python -m mnist_exp.runs gc"
    )
    import mlflow

    assert mlflow.active_run() is None  # nothing left for MLflow's exit hook to retry
    (small_disk / "filler").unlink()
    assert Store(uri, small_disk).client().get_run(recorder.run_id).info.status == "RUNNING"
    # Its owner (this process) is alive, so gc leaves it; once the owner exits, gc closes it.
    assert gc(Store(uri, small_disk), small_disk).stdout.startswith("closed (KILLED): 0 run(s)")


def test_a_full_artifact_disk_is_tagged_as_the_store_failure_it_is_reported_as(
    small_disk, tmp_path
):
    from omegaconf import OmegaConf

    from mnist_exp.tracking.provenance import Provenance
    from mnist_exp.tracking.recorder import RunRecorder, StoreFailed

    store = Store(uri=f"sqlite:///{tmp_path / 'mlflow.db'}", artifacts=small_disk / "artifacts")
    tracking = OmegaConf.create(
        {"uri": store.uri, "experiment": "x", "artifact_location": str(store.artifacts)}
    )
    with pytest.raises(StoreFailed, match="no space left on the disk") as raised:  # noqa: SIM117
        with RunRecorder.start(tracking, "artifacts overflow") as recorder:
            too_big = Provenance(tags={}, diff=None, requirements="x" * (4 << 20))
            recorder.log_provenance(too_big)  # 4 MiB on a 3 MiB disk
    assert raised.value.reason == "store_failed"
    run = store.client().get_run(recorder.run_id)
    assert run.info.status == "FAILED"
    assert run.data.tags["failure_reason"] == "store_failed"
