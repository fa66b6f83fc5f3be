"""The MLflow store as a file on disk: its URI forms, a lock for creating it, its
failures in words, and the command that opens it in the UI.

Several processes may start at once on one SQLite store, fresh or not. MLflow creates
and migrates a new database the first time a process opens it, and two processes doing
that together leave it half-migrated; :func:`store_lock` makes them take turns. Errors a
broken, old, read-only or full store raises deep inside SQLAlchemy or Alembic become one
line naming the store (:func:`store_problem`). MLflow is not imported here.
"""

from __future__ import annotations

import errno
import fcntl
import shlex
import sqlite3
from collections.abc import Iterator
from contextlib import closing, contextmanager
from pathlib import Path
from urllib.parse import quote, urlencode

from mnist_exp.config.schema import ConfigError
from mnist_exp.interrupts import deferred
from mnist_exp.results.metric_names import OBJECTIVE

SQLITE = "sqlite:///"
DEFAULT_STORE = "sqlite:///outputs/mlflow.db"  # conf/tracking/local.yaml's, for the CLIs
SQLITE_HEADER = b"SQLite format 3\x00"
GC_COMMAND = "python -m mnist_exp.runs gc"


class StoreError(ConfigError):
    """The store cannot be used as it is (corrupt, outdated, read-only, unreachable):
    one line naming it, exit 2, before anything is trained."""


def sqlite_path(uri: str) -> Path | None:
    """The database file behind a ``sqlite:///`` URI (relative or absolute), else None."""
    return Path(uri.removeprefix(SQLITE)) if uri.startswith(SQLITE) else None


def absolute_store_uri(uri: str) -> str:
    """Turn a relative ``sqlite:///outputs/...`` URI into an absolute one (others unchanged)."""
    path = sqlite_path(uri)
    return f"{SQLITE}{path.resolve()}" if path is not None and not path.is_absolute() else uri


UI_PORT = 5000  # where ui_command serves the UI, on 127.0.0.1
# MLflow 3.17's UI opens an experiment on its GenAI pages (empty traces) unless the link
# asks for the model-training view; links never change the browser's remembered choice.
TRAINING_VIEW = {"workflowType": "machine_learning"}


def is_server(uri: str) -> bool:
    """Whether ``uri`` is a tracking server (which serves the UI itself)."""
    return uri.startswith(("http://", "https://"))


def ui_arguments(uri: str, port: int = UI_PORT) -> list[str]:
    """The ``mlflow`` command's arguments that serve a local store's UI on
    127.0.0.1:``port``."""
    store = absolute_store_uri(uri)
    return ["ui", "--backend-store-uri", store, "--host", "127.0.0.1", "--port", str(port)]


def ui_command(uri: str) -> str:
    """The shell command that serves a local store's MLflow UI on 127.0.0.1:5000."""
    return shlex.join(["mlflow", *ui_arguments(uri)])


def ui_link(
    uri: str,
    experiment_id: str | None = None,
    run_id: str | None = None,
    children_of: str | None = None,
    port: int = UI_PORT,
) -> str:
    """The UI's address of a run, of an experiment's runs table (only the children of run
    ``children_of``, best first, if given: a sweep's leaderboard) or of the list of
    experiments, in the model-training view, as the UI that :func:`ui_command` starts (or
    the tracking server ``uri``) serves it."""
    base = uri.rstrip("/") if is_server(uri) else f"http://127.0.0.1:{port}"
    page = "#/experiments"
    if experiment_id is not None:
        page += f"/{experiment_id}/runs" + (f"/{run_id}" if run_id else "")
    query = dict(TRAINING_VIEW)
    if children_of is not None:  # sorted by a metric, the table lists them flat
        query["searchFilter"] = f"tags.`mlflow.parentRunId` = '{children_of}'"
        query["orderByKey"] = f"metrics.`{OBJECTIVE}`"
        query["orderByAsc"] = "false"
    return f"{base}/{page}?{urlencode(query, quote_via=quote)}"


def ui_hint(
    uri: str,
    experiment_id: str,
    run_id: str | None,
    indent: int,
    children_of: str | None = None,
) -> list[str]:
    """The summary lines that say how to see a run (or a sweep's children, see
    :func:`ui_link`) in the UI: the command that serves it, if one is needed, and the
    link; labels padded to ``indent``."""
    link = ui_link(uri, experiment_id, run_id, children_of)
    if is_server(uri):
        return ["open the UI".ljust(indent) + link]
    return ["open the UI".ljust(indent) + ui_command(uri), " " * indent + f"then {link}"]


@contextmanager
def store_lock(uri: str) -> Iterator[None]:
    """Hold an exclusive lock beside a SQLite store (``<file>.lock``) for the block, with
    interrupts held back, so that only one process at a time creates or migrates it.
    Other URIs (a server, which serialises its own writes) need no lock."""
    path = sqlite_path(uri)
    if path is None:
        yield
        return
    lock_path = path.with_name(f"{path.name}.lock")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        lock = open(lock_path, "a")  # noqa: SIM115 (closed below, after the block)
    except OSError as error:
        raise StoreError(
            f"tracking.uri={uri}: cannot write beside the store ({error.strerror}: "
            f"{error.filename}); the store and its folder must be writable"
        ) from None
    with deferred(), lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


# Phrases SQLite, SQLAlchemy and MLflow use, and what they mean for the user.
_PROBLEMS = (
    (
        "out-of-date database schema",
        "its schema is from an older MLflow; back it up, then run: mlflow db upgrade {uri}",
    ),
    (
        "file is not a database",
        "not an MLflow store (the file is not a SQLite database); "
        "move it away or point tracking.uri elsewhere",
    ),
    (
        "disk image is malformed",
        "the SQLite file is corrupt or truncated; move it away "
        "(restore a backup) or point tracking.uri elsewhere",
    ),
    ("readonly database", "the store is read-only; make the file and its folder writable"),
    ("database or disk is full", "the disk holding the store is full"),
    (
        "unable to open database file",
        "cannot open the database file; does its folder exist and is it writable?",
    ),
    (
        "no such table",
        "not an MLflow store (tables are missing); move it away or point tracking.uri elsewhere",
    ),
    (
        "can't locate revision",
        "its schema is from a newer MLflow than this one; upgrade mlflow or use another store",
    ),
)


def store_problem(error: BaseException, uri: str) -> str | None:
    """One line saying what is wrong with the store at ``uri``, if ``error`` (or an error
    it was raised from) is a known store failure; None for anything else."""
    seen: BaseException | None = error
    while seen is not None:
        if isinstance(seen, OSError) and seen.errno == errno.ENOSPC:
            return f"no space left on the disk (writing {seen.filename or 'the run'})"
        text = str(seen).lower()
        for phrase, meaning in _PROBLEMS:
            if phrase in text:
                return f"tracking.uri={uri}: {meaning.format(uri=uri)}"
        seen = seen.__cause__ or seen.__context__
    return None


def check_sqlite_file(uri: str) -> None:
    """Refuse an existing file at a ``sqlite:///`` URI that is not a SQLite database, before
    anything heavy starts. A missing or empty file is a new store."""
    path = sqlite_path(uri)
    if path is None or not path.exists():
        return
    if path.is_dir():
        raise StoreError(f"tracking.uri={uri}: {path} is a folder, not a database file")
    try:
        with open(path, "rb") as database:
            header = database.read(len(SQLITE_HEADER))
    except OSError as error:
        raise StoreError(f"tracking.uri={uri}: cannot read {path} ({error.strerror})") from None
    if not header:
        return
    if header != SQLITE_HEADER:
        raise StoreError(store_problem(Exception("file is not a database"), uri))
    try:
        with closing(sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True)) as db:
            tables = {name for (name,) in db.execute("select name from sqlite_master")}
    except sqlite3.Error as error:
        raise StoreError(store_problem(error, uri) or f"tracking.uri={uri}: {error}") from None
    if tables and "experiments" not in tables:
        raise StoreError(
            f"tracking.uri={uri}: not an MLflow store (it holds other tables: "
            f"{', '.join(sorted(tables)[:5])}); point tracking.uri elsewhere"
        )


@contextmanager
def store_errors(uri: str) -> Iterator[None]:
    """Raise a known store failure in the block as :class:`StoreError` (one line)."""
    try:
        yield
    except ConfigError:
        raise
    except Exception as error:
        problem = store_problem(error, uri)
        if problem is None:
            raise
        raise StoreError(problem) from error
