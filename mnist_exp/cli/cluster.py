"""What a Ray worker does first for ``hydra/launcher=cluster`` (conf/hydra/launcher/).

An entry point of its own: Ray calls :func:`enter_launch_dir` with no arguments in every
worker process it starts, before any job, so it reads the sweep's context here.
"""

from __future__ import annotations

import os
import sys

from mnist_exp.pipeline.sweep import LAUNCH_DIR_ENV, SweepContext


def enter_launch_dir() -> None:
    """Ray's ``worker_process_setup_hook``: work in the folder the sweep was started from.

    Relative paths (``data.path``, the SQLite store, Hydra's job folders) then mean on a
    worker what they mean on the sweeping machine, wherever ``ray start`` was run; on other
    machines that takes a shared file system mounted at the same path.
    """
    launch_dir = SweepContext.from_environment(os.environ).launch_dir
    if not launch_dir:
        return
    if not os.path.isdir(launch_dir):
        print(
            f"warning: {LAUNCH_DIR_ENV}={launch_dir} is not a folder on this machine; "
            f"relative paths resolve in {os.getcwd()}",
            file=sys.stderr,
        )
        return
    os.chdir(launch_dir)
