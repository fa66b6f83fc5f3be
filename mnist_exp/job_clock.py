"""When the current job started: the reference of its ``time/startup_seconds`` and
``time/overhead_seconds``.

A process's first job started when the process was launched (Python, imports and all); a
later job of a sequential sweep started when the launcher handed it over, so each job
reports its own start-up, not the sweep's.
"""

from __future__ import annotations

import time

_jobs_started = 0


def job_started_at() -> float:
    """The ``time.perf_counter()`` reading at which the job now starting began: the
    process's launch for its first job, else now. Call it once per job, as it starts."""
    global _jobs_started
    _jobs_started += 1
    if _jobs_started == 1:
        return process_launched_at()
    return time.perf_counter()


def process_launched_at() -> float:
    """The ``time.perf_counter()`` reading at which this process was launched (the
    operating system's record of it, to its clock tick)."""
    import psutil

    age = time.time() - psutil.Process().create_time()
    return time.perf_counter() - age
