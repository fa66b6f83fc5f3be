"""``python -m mnist_exp.runs gc [--tracking-uri URI] [--dry-run] [--force RUN_ID ...]``

Closes runs that show RUNNING although their process is gone: after a ``kill -9``, an
out-of-memory kill or a power cut, nothing was left to mark them. Each such run (sweep
parents too) is ended KILLED and tagged ``closed_by=gc``; its checkpoint stays, so
``resume=<run id>`` can still continue it. A run whose owner is on another host (or
unknown, from an older version) is left alone and listed: run ``gc`` on that host, or
name it with ``--force`` once you know its process is gone.
"""

from __future__ import annotations

import argparse
import os
import sys

from mnist_exp.config.schema import ConfigError
from mnist_exp.errors import EXIT_BAD_CONFIG
from mnist_exp.tracking.store import DEFAULT_STORE
from mnist_exp.tracking.stored_runs import close_stale_runs


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    """The command line: the ``gc`` action and its options."""
    parser = argparse.ArgumentParser(
        prog="python -m mnist_exp.runs",
        description="Housekeeping of the MLflow store's runs.",
    )
    actions = parser.add_subparsers(dest="action", required=True)
    gc = actions.add_parser("gc", help="mark RUNNING runs whose process is gone as KILLED")
    gc.add_argument(
        "--tracking-uri",
        default=os.environ.get("MLFLOW_TRACKING_URI", DEFAULT_STORE),
        help=f"the store (default: $MLFLOW_TRACKING_URI or {DEFAULT_STORE})",
    )
    gc.add_argument("--dry-run", action="store_true", help="only list what would be closed")
    gc.add_argument(
        "--force",
        nargs="+",
        default=[],
        metavar="RUN_ID",
        help="also close these RUNNING runs, whoever owns them (their process must be gone)",
    )
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    """Run the command; return the exit code."""
    args = parse_args(argv)
    try:
        closed, left = close_stale_runs(args.tracking_uri, args.force, args.dry_run)
    except ConfigError as error:
        print(f"error: {error}", file=sys.stderr)
        return EXIT_BAD_CONFIG
    verb = "would close" if args.dry_run else "closed (KILLED)"
    print(f"{verb}: {len(closed)} run(s) whose process is gone")
    for line in closed:
        print(f"  {line}")
    if left:
        print(f"left RUNNING: {len(left)} run(s) owned elsewhere; --force RUN_ID closes one")
        for line in left:
            print(f"  {line}")
    return 0
