"""Runs read back from the store: one run's status and tags (for ``resume=``), and runs left
RUNNING by a process that is gone (``python -m mnist_exp.runs gc``).

MLflow is imported only inside the functions, so the commands that use them start fast.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from mnist_exp.config.schema import ConfigError
from mnist_exp.tracking.owner import describe_owner, owner_alive
from mnist_exp.tracking.preflight import check_store
from mnist_exp.tracking.store import absolute_store_uri, sqlite_path, store_errors

RUN_ID = re.compile(r"[0-9a-f]{32}")  # an MLflow run id
CLOSED_TAG = "closed_by"  # set to "gc" on a run that gc ended


@dataclass(frozen=True)
class StoredRun:
    """What the store holds about a run's state: its id, status and tags."""

    run_id: str
    status: str  # RUNNING, FINISHED, FAILED, KILLED, SCHEDULED
    tags: dict[str, str]


class RunNotFound(ConfigError):
    """The store, or the run in it, is not there (one line saying which)."""


def find_run(run_id: str, tracking_uri: str) -> StoredRun:
    """The run ``run_id`` in the store at ``tracking_uri``; :class:`RunNotFound` if the
    store or the run is not there, StoreError if the store cannot be read."""
    from mlflow import MlflowClient
    from mlflow.exceptions import MlflowException

    uri = absolute_store_uri(tracking_uri)
    if (path := sqlite_path(uri)) is not None and not path.is_file():
        raise RunNotFound(f"no MLflow store at {uri} (set tracking.uri)")
    try:
        with store_errors(uri):
            run = MlflowClient(tracking_uri=uri).get_run(run_id)
    except MlflowException as error:
        raise RunNotFound(str(error).splitlines()[0]) from None
    return StoredRun(run.info.run_id, run.info.status, dict(run.data.tags))


def experiment_id(tracking_uri: str, name: str) -> str | None:
    """The id of experiment ``name`` in the store at ``tracking_uri``; None when the store
    or the experiment does not exist yet; StoreError if the store cannot be read."""
    from mlflow import MlflowClient

    uri = absolute_store_uri(tracking_uri)
    if (path := sqlite_path(uri)) is not None and not path.is_file():
        return None
    check_store(tracking_uri)
    with store_errors(uri):
        found = MlflowClient(tracking_uri=uri).get_experiment_by_name(name)
    return None if found is None else found.experiment_id


def close_stale_runs(
    tracking_uri: str, force: list[str], dry_run: bool = False
) -> tuple[list[str], list[str]]:
    """End KILLED (and tag ``closed_by=gc``) every RUNNING run of the store whose owner
    process is gone, and those in ``force`` whose owner cannot be checked from here;
    return (lines for closed runs, lines for runs left RUNNING and why). With ``dry_run``,
    only list them.

    A run whose owner is alive on this host is never closed, ``force`` or not. Deleted
    runs (in the UI's trash) and the runs of deleted experiments are left as they are:
    MLflow changes only active runs; they are listed, to be restored first."""
    from mlflow import MlflowClient
    from mlflow.entities import ViewType

    check_store(tracking_uri)
    uri = absolute_store_uri(tracking_uri)
    closed: list[str] = []
    left: list[str] = []
    with store_errors(uri):
        client = MlflowClient(tracking_uri=uri)
        experiments = {e.experiment_id: e for e in client.search_experiments(ViewType.ALL)}
        running = client.search_runs(
            list(experiments), "attributes.status = 'RUNNING'", ViewType.ALL, max_results=50_000
        )
        for run in running:
            run_id, tags = run.info.run_id, run.data.tags
            alive = owner_alive(tags)
            line = f"{run_id}  {run.info.run_name or ''}  ({describe_owner(tags)})"
            deleted = (
                run.info.lifecycle_stage == "deleted"
                or experiments[run.info.experiment_id].lifecycle_stage == "deleted"
            )
            if alive:
                if run_id in force:
                    left.append(f"{line}: its process is alive on this host; stop it first")
            elif deleted:
                if alive is False or run_id in force:
                    left.append(f"{line}: deleted; restore it (or its experiment) to close it")
            elif alive is False or run_id in force:
                if not dry_run:
                    client.set_tag(run_id, CLOSED_TAG, "gc")
                    client.set_terminated(run_id, "KILLED")
                closed.append(line)
            else:
                left.append(f"{line}: cannot be checked from here")
    return closed, left
