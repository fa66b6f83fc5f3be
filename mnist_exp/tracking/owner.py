"""Which process owns a RUNNING run, and whether that process is still alive.

Every run (and sweep parent) is tagged with its owner: the host, the process id and the
process's start time. A run that shows RUNNING while its owner is gone was killed without
a chance to say so (``kill -9``, a power cut); :func:`owner_alive` tells the two apart,
so ``resume=`` and ``python -m mnist_exp.runs gc`` can act on it. The start time guards
against a process id that the system has since given to another process.
"""

from __future__ import annotations

import os
import socket
from pathlib import Path

HOST_TAG = "host"
PID_TAG = "pid"
PID_START_TAG = "pid.start_time"


def _stat_fields(pid: int) -> list[str] | None:
    """The fields of ``/proc/<pid>/stat`` after the command name (Linux), or None."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # The command name (field 2) may hold spaces and parentheses: split after its ')'.
    return stat.rpartition(")")[2].split()


def _start_time(pid: int) -> str | None:
    """When process ``pid`` started (clock ticks since boot, Linux), or None if unknown."""
    fields = _stat_fields(pid)
    return None if fields is None else fields[19]


def _is_zombie(pid: int) -> bool:
    """Whether ``pid`` has exited and only waits for its parent to collect it."""
    fields = _stat_fields(pid)
    return fields is not None and fields[0] == "Z"


def owner_tags() -> dict[str, str]:
    """Tags naming this process as a run's owner."""
    tags = {HOST_TAG: socket.gethostname(), PID_TAG: str(os.getpid())}
    if (started := _start_time(os.getpid())) is not None:
        tags[PID_START_TAG] = started
    return tags


def owner_alive(tags: dict[str, str]) -> bool | None:
    """Whether the process named in a run's owner tags is still running: True or False
    for a process on this host, None when that cannot be told here (no owner tags, as on
    runs from older versions, or another host)."""
    if tags.get(HOST_TAG) != socket.gethostname() or not tags.get(PID_TAG, "").isdigit():
        return None
    pid = int(tags[PID_TAG])
    if pid <= 0:
        return False  # no process has it (os.kill(0, ...) would signal our own group)
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass  # it exists, under another user
    if _is_zombie(pid):
        return False  # exited; only its parent has not collected it yet
    recorded = tags.get(PID_START_TAG)
    return recorded is None or _start_time(pid) in (None, recorded)


def describe_owner(tags: dict[str, str]) -> str:
    """``process 123 on host-a``, or ``an unknown process`` without owner tags."""
    if PID_TAG not in tags:
        return "an unknown process"
    return f"process {tags[PID_TAG]} on {tags.get(HOST_TAG, 'an unknown host')}"
