"""runs gc against what a hostile tester tried: deleted runs, live owners named with --force,
zombie owners and a pid of 0. Real runs in a real SQLite store, real processes."""

from __future__ import annotations

import contextlib
import io
import os
import socket
import subprocess
import sys

from conftest import Store

from mnist_exp.cli.runs import main as runs_main
from mnist_exp.tracking.owner import owner_alive, owner_tags


def gc(store: Store, *args: str) -> tuple[int, str, str]:
    stdout, stderr = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(stdout), contextlib.redirect_stderr(stderr):
        code = runs_main(["gc", "--tracking-uri", store.uri, *args])
    return code, stdout.getvalue(), stderr.getvalue()


def gone_pid() -> int:
    """The id of a process that has exited and been collected."""
    process = subprocess.Popen([sys.executable, "-c", "pass"])
    process.wait()
    return process.pid


def running_run(store: Store, tags: dict[str, str]) -> str:
    client = store.client()
    experiment = client.get_experiment_by_name("mnist") or None
    experiment_id = experiment.experiment_id if experiment else client.create_experiment("mnist")
    return client.create_run(experiment_id, tags=tags).info.run_id


def test_a_deleted_run_with_a_dead_owner_is_listed_not_a_crash(store):
    dead = {"host": socket.gethostname(), "pid": str(gone_pid())}
    deleted = running_run(store, dead)
    store.client().delete_run(deleted)
    stale = running_run(store, dead)
    code, out, err = gc(store)
    assert code == 0, err
    assert err == ""
    assert out.splitlines()[0] == "closed (KILLED): 1 run(s) whose process is gone"
    assert stale in out and f"{deleted}" in out and "deleted; restore it" in out
    assert store.client().get_run(stale).info.status == "KILLED"
    assert store.client().get_run(deleted).info.status == "RUNNING"
    code, out, _ = gc(store, "--force", deleted)
    assert code == 0 and "closed (KILLED): 0 run(s)" in out


def test_force_never_closes_a_run_whose_owner_is_alive_here(store):
    mine = running_run(store, owner_tags())  # this test process: alive
    code, out, _ = gc(store, "--force", mine)
    assert code == 0
    assert out.splitlines()[0] == "closed (KILLED): 0 run(s) whose process is gone"
    assert "its process is alive on this host; stop it first" in out
    assert store.client().get_run(mine).info.status == "RUNNING"
    assert "whose process is gone" not in out.split("\n", 1)[1]


def test_a_zombie_or_pid_zero_is_not_alive():
    here = socket.gethostname()
    assert owner_alive({"host": here, "pid": "0"}) is False
    zombie = subprocess.Popen([sys.executable, "-c", "pass"])
    try:
        os.waitid(os.P_PID, zombie.pid, os.WEXITED | os.WNOWAIT)  # exited, not collected
        assert owner_alive({"host": here, "pid": str(zombie.pid)}) is False
    finally:
        zombie.wait()
    assert owner_alive({"host": here, "pid": str(os.getpid())}) is True


def test_gc_closes_a_run_owned_by_pid_zero(store):
    stale = running_run(store, {"host": socket.gethostname(), "pid": "0"})
    code, out, _ = gc(store)
    assert code == 0 and stale in out
    assert store.client().get_run(stale).info.status == "KILLED"
