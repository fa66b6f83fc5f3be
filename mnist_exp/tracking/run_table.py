"""The training runs of an experiment as one pandas DataFrame, with typed config values.

:func:`load_runs` pages through MLflow's run search (1,000 runs a page, never run by run) and
turns each run into a row: its id, name, status and times, every config key under its
dotted name with the value's real type (params are stored as text: ``[512, 256]`` comes
back as the tuple ``(512, 256)``, ``null`` as None), every final metric, and its tags as
``tags.<name>``. ``where`` filters it as ``runs ls --where`` does
(:mod:`mnist_exp.results.run_query`). Sweep parents and evaluation runs are not training
runs and are left out. :func:`resolve_run` finds one run by its id or a unique prefix.

An SQLite store is read directly (:mod:`mnist_exp.tracking.sqlite_runs`: MLflow's
search spends seconds building objects for 1,000 runs), a tracking server through
MLflow's search. MLflow and pandas are imported inside the functions: the commands start
without them.
"""

from __future__ import annotations

import functools
import json
import math
import os
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mnist_exp.config.schema import ConfigError
from mnist_exp.results.metric_names import EPOCH
from mnist_exp.results.run_query import apply_conditions, frozen, parse_conditions
from mnist_exp.tracking.preflight import check_store
from mnist_exp.tracking.sqlite_runs import NoSuchExperiment, StoredRunRecord, read_runs
from mnist_exp.tracking.store import DEFAULT_STORE, absolute_store_uri, sqlite_path, store_errors
from mnist_exp.tracking.sweep_record import PARENT_TAG

if TYPE_CHECKING:
    import pandas as pd
    from mlflow import MlflowClient
    from mlflow.entities import Run

PAGE_SIZE = 1000  # runs per search request
PARENT_RUN_TAG = "mlflow.parentRunId"
NOTE_TAG = "mlflow.note.content"
KIND_TAG = "mnist_exp.kind"  # "evaluation" on a run of python -m mnist_exp.evaluate
TAG_PREFIX = "tags."
# The first columns of every row, in this order.
RUN_COLUMNS = ("run_id", "run_name", "status", "start_time", "duration", "sweep", "note")


def default_tracking_uri() -> str:
    """The store the ``runs`` commands read when none is named: ``$MLFLOW_TRACKING_URI``,
    else the project's own SQLite file."""
    return os.environ.get("MLFLOW_TRACKING_URI") or DEFAULT_STORE


def load_runs(
    tracking_uri: str | None = None,
    experiment: str = "mnist",
    where: str | Iterable[str] | None = None,
    sweep: str | None = None,
) -> pd.DataFrame:
    """The training runs of ``experiment`` in the store at ``tracking_uri``, newest first.

    Args:
        tracking_uri: the store (default: ``$MLFLOW_TRACKING_URI``, else
            ``sqlite:///outputs/mlflow.db``); an SQLite file or a tracking server.
        experiment: the MLflow experiment's name.
        where: conditions, all of which a run must meet: ``"model.dropout=0.3"``,
            ``"train.backend=jax"``, ``"model.hidden_units=[512,256]"``,
            ``"final/test_accuracy>0.97"``, ``"tags.idea=wd"`` (one string or several).
        sweep: a sweep parent's run id (or a unique prefix): only its children.

    Returns:
        One row per run: ``run_id``, ``run_name``, ``status``, ``start_time`` and
        ``duration`` (seconds), ``sweep`` (the parent's run id) and ``note``; then every
        config key under its dotted name (``model.dropout``) with its real type (float,
        int, bool, str, None; lists as tuples); every final metric (``final/...``,
        ``time/...``); and the run's tags as ``tags.<name>``.

    Raises:
        ConfigError: one line, for a store or experiment that is not there, a sweep id
            that is not a sweep's, or a condition that is malformed or names a key no
            run has.
    """
    conditions = parse_conditions([where] if isinstance(where, str) else list(where or ()))
    uri = absolute_store_uri(tracking_uri or default_tracking_uri())
    records = _experiment_records(uri, experiment)
    if sweep:
        parent = _sweep_parent(records, sweep)
        records = [r for r in records if r.tags.get(PARENT_RUN_TAG) == parent]
    runs = [r for r in records if _is_training(r)]
    return apply_conditions(runs_frame(runs), conditions)


def _experiment_records(uri: str, experiment: str) -> list[StoredRunRecord]:
    """Every active run of ``experiment``, newest first: read from an SQLite file
    directly where its tables are as expected, else through MLflow's search, a page at a
    time. ConfigError (one line) for a store or experiment that is not there."""
    if (path := sqlite_path(uri)) is not None:
        _require_file(path, uri)
        check_store(uri)
        try:
            found = read_runs(path, experiment)
        except NoSuchExperiment as missing:
            raise ConfigError(_no_experiment(experiment, uri, missing.names)) from None
        if found is not None:
            return found
    client = open_client(uri)
    with store_errors(uri):
        experiment_id = _experiment_id(client, uri, experiment)
        return [record_of(run) for run in _search(client, experiment_id)]


def _sweep_parent(records: list[StoredRunRecord], reference: str) -> str:
    """The run id of the sweep parent among ``records`` whose id is (or starts with)
    ``reference``; ConfigError if there is not exactly one."""
    parents = [
        r.run_id
        for r in records
        if r.run_id.startswith(reference.strip().lower()) and r.tags.get(PARENT_TAG) == "parent"
    ]
    if len(parents) != 1:
        what = "no sweep parent run" if not parents else f"{len(parents)} sweep parent runs"
        raise ConfigError(f"--sweep {reference}: {what} of this experiment has that id")
    return parents[0]


def record_of(run: Run) -> StoredRunRecord:
    """An MLflow run entity as the record a row is made from."""
    info, data = run.info, run.data
    return StoredRunRecord(
        run_id=info.run_id,
        run_name=info.run_name,
        status=info.status,
        start_time=info.start_time,
        end_time=info.end_time,
        params=dict(data.params),
        metrics=dict(data.metrics),
        tags=dict(data.tags),
    )


def open_client(uri: str) -> MlflowClient:
    """A client of the store at ``uri`` (absolute); ConfigError if an SQLite file is not
    there, StoreError if it cannot be read."""
    from mlflow import MlflowClient

    if (path := sqlite_path(uri)) is not None:
        _require_file(path, uri)
    check_store(uri)
    return MlflowClient(tracking_uri=uri)


def _require_file(path: Path, uri: str) -> None:
    if not path.is_file():
        raise ConfigError(f"no MLflow store at {uri} (nothing was recorded there yet)")


def resolve_run(client: MlflowClient, uri: str, reference: str) -> Run:
    """The run whose id is ``reference``, or starts with it (at least 4 hex digits, as
    ``runs ls`` shows them); ConfigError naming it when no run, or more than one, has it."""
    from mlflow.exceptions import MlflowException

    reference = reference.strip().lower()
    if len(reference) < 4 or any(c not in "0123456789abcdef" for c in reference):
        raise ConfigError(
            f"{reference!r} is not a run id: expected 32 hex digits (or at "
            "least the first 4, as runs ls shows them)"
        )
    with store_errors(uri):
        if len(reference) == 32:
            try:
                return client.get_run(reference)
            except MlflowException:
                raise ConfigError(f"no run {reference} in {uri}") from None
        matches = [run for run in _every_run(client) if run.info.run_id.startswith(reference)]
    if len(matches) == 1:
        return matches[0]
    if not matches:
        raise ConfigError(f"no run whose id starts with {reference} in {uri}")
    found = ", ".join(run.info.run_id for run in matches[:5])
    raise ConfigError(f"{reference} starts {len(matches)} run ids ({found}); give more digits")


def runs_frame(runs: list[StoredRunRecord]) -> pd.DataFrame:
    """Runs as rows (see :func:`load_runs`), each column with the type of its values:
    numbers as numbers where every run has one, else Python objects (a logged None kept
    as None; a key a run does not have is NaN)."""
    import pandas as pd

    rows = [_row(run) for run in runs]
    columns: dict[str, None] = dict.fromkeys(RUN_COLUMNS)
    for part in ("params", "metrics", "tags"):
        for row in rows:
            columns.update(dict.fromkeys(sorted(row[part])))
    records = [{**row["run"], **row["params"], **row["metrics"], **row["tags"]} for row in rows]
    frame = pd.DataFrame.from_records(records, columns=list(columns))
    for column in frame.columns:
        values = [record.get(column, math.nan) for record in records]
        frame[column] = _typed_column(values, column in ("start_time",))
    return frame


def _typed_column(values: list[Any], is_time: bool) -> Any:
    """A column as a Series of one dtype where that loses nothing (no None among numbers),
    else of Python objects."""
    import pandas as pd

    if is_time:
        return pd.to_datetime(values, unit="ms", utc=True)
    if any(value is None for value in values) or any(isinstance(v, tuple) for v in values):
        return pd.Series(values, dtype=object)
    return pd.Series(values, dtype=object).infer_objects()


def _row(run: StoredRunRecord) -> dict[str, dict[str, Any]]:
    end = run.end_time
    return {
        "run": {
            "run_id": run.run_id,
            "run_name": run.run_name,
            "status": run.status,
            "start_time": run.start_time,
            "duration": None if end is None else round((end - run.start_time) / 1000, 3),
            "sweep": run.tags.get(PARENT_RUN_TAG),
            "note": run.tags.get(NOTE_TAG),
        },
        "params": {key: typed_param(value) for key, value in run.params.items()},
        "metrics": {
            name: value for name, value in run.metrics.items() if not name.startswith(EPOCH)
        },
        "tags": {
            f"{TAG_PREFIX}{name}": value
            for name, value in run.tags.items()
            if not name.startswith("mlflow.")
        },
    }


@functools.lru_cache(maxsize=4096)  # a store repeats few values many times
def typed_param(text: str) -> Any:
    """A logged param back as the value it was: ``null`` -> None, ``true`` -> True,
    ``0.3`` -> 0.3, ``[512, 256]`` -> (512, 256), ``adam`` -> ``"adam"``; also Python's
    spelling (``None``, ``True``) that runs logged before params were typed."""
    legacy = {"None": None, "True": True, "False": False}
    if text in legacy:
        return legacy[text]
    try:
        value = json.loads(text)
    except ValueError:
        value = _python_list(text)
        return text if value is None else value
    return frozen(value)


def _python_list(text: str) -> tuple | None:
    """A list in Python's spelling (``['a', 'b']``), as older runs logged string lists."""
    if not (text.startswith("[") and text.endswith("]")):
        return None
    import ast

    try:
        value = ast.literal_eval(text)
    except (ValueError, SyntaxError):
        return None
    return frozen(value) if isinstance(value, list) else None


def _is_training(run: StoredRunRecord) -> bool:
    """Whether ``run`` trained a model (not a sweep parent, not an evaluation)."""
    tags = run.tags
    return tags.get(PARENT_TAG) != "parent" and tags.get(KIND_TAG) != "evaluation"


def _experiment_id(client: MlflowClient, uri: str, name: str) -> str:
    found = client.get_experiment_by_name(name)
    if found is None:
        names = [e.name for e in client.search_experiments()]
        raise ConfigError(_no_experiment(name, uri, names))
    return found.experiment_id


def _no_experiment(name: str, uri: str, names: list[str]) -> str:
    there = f"; experiments there: {', '.join(names)}" if names else " (it holds none yet)"
    return f"no experiment '{name}' in {uri}{there}"


def _search(client: MlflowClient, experiment_id: str) -> Iterator[Run]:
    """Every active run of the experiment, newest first, a page of :data:`PAGE_SIZE` at a
    time."""
    token = None
    while True:
        page = client.search_runs(
            [experiment_id],
            "",
            order_by=["attributes.start_time DESC"],
            max_results=PAGE_SIZE,
            page_token=token,
        )
        yield from page
        token = page.token
        if not token:
            return


def _every_run(client: MlflowClient) -> Iterator[Run]:
    """Every active run of every experiment of the store."""
    for experiment in client.search_experiments():
        yield from _search(client, experiment.experiment_id)
