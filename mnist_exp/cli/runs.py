"""``python -m mnist_exp.runs ACTION``: the runs of the store, after they ran.

``ls`` lists an experiment's training runs (newest first) with the config keys that tell
them apart and their final accuracies, filtered (``--where``), sorted, grouped
(``--group-by``) and as a table, CSV, JSON or Markdown. ``show RUN_ID`` prints one run
on one screen, ``diff A B [C ...]`` what differs between runs; a run id may be shortened
to its first digits, as ``ls`` shows them.

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
from mnist_exp.results.run_views import FORMATS
from mnist_exp.tracking.run_table import default_tracking_uri
from mnist_exp.tracking.store import (
    DEFAULT_STORE,
    UI_PORT,
    is_server,
    ui_arguments,
    ui_link,
)
from mnist_exp.tracking.stored_runs import close_stale_runs


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    """The command line: the actions and their options."""
    parser = argparse.ArgumentParser(
        prog="python -m mnist_exp.runs",
        description="The runs of the MLflow store: list, show, diff, the UI, housekeeping.",
    )
    actions = parser.add_subparsers(dest="action", required=True)
    store = argparse.ArgumentParser(add_help=False)
    store.add_argument(
        "--tracking-uri",
        default=default_tracking_uri(),
        help=f"the store (default: $MLFLOW_TRACKING_URI or {DEFAULT_STORE})",
    )
    ls = actions.add_parser("ls", parents=[store], help="your training runs, newest first")
    _add_listing_options(ls)
    show = actions.add_parser("show", parents=[store], help="one run on one screen")
    show.add_argument("run_id", help="the run's id (or its first digits, as ls shows them)")
    diff = actions.add_parser(
        "diff", parents=[store], help="what differs between runs: config, metrics, provenance"
    )
    diff.add_argument("run_ids", nargs="+", metavar="RUN_ID", help="two or more runs")
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


def _add_listing_options(ls: argparse.ArgumentParser) -> None:
    """The options of the ``ls`` action."""
    ls.add_argument("--experiment", default="mnist", help="the MLflow experiment (mnist)")
    ls.add_argument(
        "--where",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="keep runs whose typed value matches (= != > >= < <=): model.dropout=0.3, "
        "model.hidden_units=[512,256], final/test_accuracy>0.97, tags.idea=wd; repeat to AND",
    )
    ls.add_argument("--sweep", metavar="PARENT_ID", help="only this sweep's runs")
    ls.add_argument(
        "--status", action="append", default=[], help="only runs with this status (repeatable)"
    )
    ls.add_argument("--sort", metavar="KEY", help="sort by this metric or key, highest first")
    ls.add_argument("--asc", action="store_true", help="with --sort: lowest first")
    ls.add_argument("--limit", type=int, metavar="N", help="at most N runs")
    ls.add_argument(
        "--columns",
        nargs="+",
        default=[],
        metavar="KEY",
        help="also show these keys (the keys whose values differ are shown anyway)",
    )
    ls.add_argument(
        "--group-by", metavar="KEY", help="one row per value: runs, mean ± std of the metrics"
    )
    ls.add_argument("--format", choices=FORMATS, default="table", help="table (default)")


def main(argv: list[str] | None = None) -> int:
    """Run the command; return the exit code."""
    args = parse_args(argv)
    if args.action == "ui":
        return serve_ui(args.tracking_uri, args.experiment, args.port)
    try:
        if args.action in ("ls", "show", "diff"):
            print(_inspect(args))
            return 0
        closed, left = close_stale_runs(args.tracking_uri, args.force, args.dry_run)
    except ConfigError as error:
        print(f"error: {error}", file=sys.stderr)
        return EXIT_BAD_CONFIG
    verb = "would close" if args.dry_run else "closed (KILLED)"
    print(f"{verb}: {len(closed)} run(s) whose process is gone")
    for line in closed:
        print(f"  {line}")
    if left:
        print(
            f"left RUNNING: {len(left)} run(s); --force RUN_ID closes one owned elsewhere "
            "once its process is gone"
        )
        for line in left:
            print(f"  {line}")
    return 0


def _inspect(args: argparse.Namespace) -> str:
    """The text of ``ls``, ``show`` or ``diff`` (pandas and MLflow load only here)."""
    from mnist_exp.pipeline.inspect_runs import Listing, diff_runs, list_runs, show_run

    if args.action == "show":
        return show_run(args.tracking_uri, args.run_id)
    if args.action == "diff":
        return diff_runs(args.tracking_uri, args.run_ids)
    return list_runs(
        Listing(
            tracking_uri=args.tracking_uri,
            experiment=args.experiment,
            where=args.where,
            sweep=args.sweep,
            status=args.status,
            sort=args.sort,
            ascending=args.asc,
            limit=args.limit,
            columns=args.columns,
            group_by=args.group_by,
            form=args.format,
        )
    ).rstrip("\n")


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
