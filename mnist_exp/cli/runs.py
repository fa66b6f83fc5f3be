"""``python -m mnist_exp.runs gc [--tracking-uri URI] [--dry-run] [--force RUN_ID ...]``
and ``python -m mnist_exp.runs ui [--tracking-uri URI] [--experiment NAME] [--port N]``.

``ui`` serves the store's MLflow UI on 127.0.0.1 after printing the link that opens the
experiment's runs in the model-training view (MLflow 3.17 opens on GenAI pages otherwise).

``gc`` closes runs that show RUNNING although their process is gone: after a ``kill -9``, an
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
from mnist_exp.tracking.store import (
    DEFAULT_STORE,
    UI_PORT,
    is_server,
    ui_arguments,
    ui_link,
)
from mnist_exp.tracking.stored_runs import close_stale_runs


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    """The command line: the ``gc`` action and its options."""
    parser = argparse.ArgumentParser(
        prog="python -m mnist_exp.runs",
        description="Housekeeping of the MLflow store's runs.",
    )
    actions = parser.add_subparsers(dest="action", required=True)
    store = argparse.ArgumentParser(add_help=False)
    store.add_argument(
        "--tracking-uri",
        default=os.environ.get("MLFLOW_TRACKING_URI", DEFAULT_STORE),
        help=f"the store (default: $MLFLOW_TRACKING_URI or {DEFAULT_STORE})",
    )
    gc = actions.add_parser(
        "gc", parents=[store], help="mark RUNNING runs whose process is gone as KILLED"
    )
    gc.add_argument("--dry-run", action="store_true", help="only list what would be closed")
    gc.add_argument(
        "--force",
        nargs="+",
        default=[],
        metavar="RUN_ID",
        help="also close these RUNNING runs, whoever owns them (their process must be gone)",
    )
    ui = actions.add_parser(
        "ui", parents=[store], help="serve the MLflow UI on 127.0.0.1, opening on the runs"
    )
    ui.add_argument("--experiment", default="mnist", help="the experiment to link (mnist)")
    ui.add_argument("--port", type=int, default=UI_PORT, help=f"the port ({UI_PORT})")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    """Run the command; return the exit code."""
    args = parse_args(argv)
    if args.action == "ui":
        return serve_ui(args.tracking_uri, args.experiment, args.port)
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


def serve_ui(tracking_uri: str, experiment: str, port: int) -> int:
    """Print the link to ``experiment``'s runs in the model-training view (or to the list
    of experiments, while it does not exist yet), then become ``mlflow ui`` on
    127.0.0.1:``port`` (a tracking server serves its own: only the link); an unusable
    store is one line and exit 2."""
    from mnist_exp.tracking.stored_runs import experiment_id

    try:
        found = experiment_id(tracking_uri, experiment)
    except ConfigError as error:
        print(f"error: {error}", file=sys.stderr)
        return EXIT_BAD_CONFIG
    link = ui_link(tracking_uri, found, port=port)
    if is_server(tracking_uri):
        print(f"MLflow UI: {link}   (served by the tracking server)")
        return 0
    print(f"MLflow UI: {link}   (Ctrl-C stops it)", flush=True)
    os.execv(sys.executable, [sys.executable, "-m", "mlflow", *ui_arguments(tracking_uri, port)])
