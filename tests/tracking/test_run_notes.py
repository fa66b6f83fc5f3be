"""What a user adds to a run's record from the command line: a note and tags (on a run, on
a sweep's parent and every child), the run it reruns, and MLflow's system metrics (opt-in),
on real runs in temp stores. They train in this process, on the Keras backend it already
runs (an in-process sweep cannot switch it)."""

from __future__ import annotations

import os
import threading
import time

import pytest
from conftest import Store, in_process, train_in_process

from mnist_exp.cli.run import main as run_main
from mnist_exp.pipeline.sweep import PARENT_RUN_ENV, RESUMED_ENV, VARIES_ENV
from mnist_exp.tracking.recorder import NOTE_TAG, RunRecorder
from mnist_exp.tracking.sweep_record import SweepRecorder

NOTE = "why I ran this: weight decay, again"
USER_TAGS = {"idea": "wd", "ticket": "42"}
ON_THE_COMMAND_LINE = [f"tracking.note='{NOTE}'", "tracking.tags={idea: wd, ticket: 42}"]
MONITOR_THREAD = "SystemMetricsMonitor"  # the name of MLflow's monitor thread


def system_metrics(run) -> set[str]:
    return {name for name in run.data.metrics if name.startswith("system/")}


def monitor_threads() -> list[threading.Thread]:
    return [thread for thread in threading.enumerate() if thread.name == MONITOR_THREAD]


@pytest.fixture(scope="module")
def runs(tmp_path_factory, mnist_npz):
    """Two tiny real runs in one store: one with a note, tags, ``rerun=`` and system
    metrics on; one with the defaults. Returns them (noted, plain)."""
    folder = tmp_path_factory.mktemp("notes")
    store = Store(uri=f"sqlite:///{folder / 'mlflow.db'}", artifacts=folder / "mlartifacts")
    common = [f"data.path={mnist_npz}", "train.epochs=1", "tracking.log_model=false"]
    common += store.overrides
    train_in_process(
        *common, *ON_THE_COMMAND_LINE, "rerun=0123456789abcdef", "tracking.system_metrics=true"
    )
    assert not monitor_threads()  # the run's end stopped the monitor
    train_in_process(*common)
    noted, plain = store.runs()
    return noted, plain


def test_a_runs_note_and_tags_come_from_the_command_line(runs):
    noted, plain = runs
    assert noted.data.tags[NOTE_TAG] == NOTE
    assert {key: noted.data.tags[key] for key in USER_TAGS} == USER_TAGS
    assert noted.data.tags["rerun_of"] == "0123456789abcdef"
    assert not {NOTE_TAG, "rerun_of", *USER_TAGS} & set(plain.data.tags)


def test_system_metrics_are_recorded_only_when_asked_for(runs):
    noted, plain = runs
    recorded = system_metrics(noted)
    assert {"system/cpu_utilization_percentage", "system/system_memory_usage_megabytes"} <= (
        recorded
    )
    assert system_metrics(plain) == set()


@pytest.mark.parametrize(
    ("error", "status"), [(RuntimeError("boom"), "FAILED"), (KeyboardInterrupt(), "KILLED")]
)
def test_a_run_that_fails_or_is_killed_stops_its_monitor_and_keeps_its_samples(
    make_config, store, error, status
):
    cfg = make_config("tracking.system_metrics=true", *store.overrides)
    with pytest.raises(type(error)), RunRecorder.start(cfg.tracking) as recorder:
        assert recorder.run_id  # the run opens on its writer's thread: wait for it
        assert len(monitor_threads()) == 1
        time.sleep(1.5)  # one sample is logged after a second
        raise error
    assert not monitor_threads()
    (run,) = store.runs()
    assert run.info.status == status
    assert "system/cpu_utilization_percentage" in system_metrics(run)


def test_a_sweeps_parent_takes_the_note_and_tags_of_the_attempt_that_opens_it(
    make_config, store, tmp_path
):
    first = make_config(*store.overrides, *ON_THE_COMMAND_LINE).tracking
    parent = SweepRecorder.open(first, str(tmp_path / "sweep"), "BasicSweeper", {})
    parent.end("KILLED")
    tags = store.client().get_run(parent.run_id).data.tags
    assert (tags[NOTE_TAG], tags["idea"], tags["ticket"]) == (NOTE, "wd", "42")
    # Continued with a new note and another tag: the parent says so; what was not
    # given again stays.
    again = make_config(
        *store.overrides, "tracking.note='the same sweep, finished'", "tracking.tags={ticket: 43}"
    ).tracking
    reopened = SweepRecorder.reopen(again, parent.run_id, {})
    reopened.end("FINISHED")
    tags = store.client().get_run(parent.run_id).data.tags
    assert (tags[NOTE_TAG], tags["idea"], tags["ticket"]) == (
        "the same sweep, finished",
        "wd",
        "43",
    )


@pytest.mark.slow
def test_a_sweeps_note_and_tags_go_on_its_parent_and_every_child(
    tmp_path, store, mnist_npz, monkeypatch
):
    # The sweep sets these in this process's environment: put back as they were after it.
    for name in (PARENT_RUN_ENV, RESUMED_ENV, VARIES_ENV):
        monkeypatch.setenv(name, os.environ.get(name, ""))
    done = in_process(
        run_main,
        [
            "-m",
            "model.dropout=0.2,0.5",
            *ON_THE_COMMAND_LINE,
            "train.epochs=1",
            "train.verbose=0",
            "train.checkpoint=false",
            "tracking.log_model=false",
            f"data.path={mnist_npz}",
            f"hydra.sweep.dir={tmp_path / 'sweep'}",
            *store.overrides,
        ],
    )
    assert done.returncode == 0, done.stderr
    runs = store.runs()
    assert len(runs) == 3  # the parent and its two jobs
    for run in runs:
        assert run.info.status == "FINISHED"
        assert run.data.tags[NOTE_TAG] == NOTE
        assert {key: run.data.tags[key] for key in USER_TAGS} == USER_TAGS
