"""A sweep's MLflow parent run: opened before any job starts (or by its first job, as that
job's training starts: :class:`ParentOnDemand`), its children read back and ranked, the
leaderboard published on it, the best child tagged (and registered), and the parent
closed when the sweep ends. A grid sweep run again with the same overrides finds its
parent by the sweep's fingerprint (:meth:`SweepRecorder.latest_parent`) and its jobs
find the children that already finished their config (:func:`finished_child`).

:class:`SweepRecorder` owns every write to a parent run. The parents this process opened
and has not closed are kept here, so that an interrupted sweep can close them
(:func:`end_open_sweeps`). MLflow is imported only inside the functions: the command that
runs sweeps starts without it.
"""

from __future__ import annotations

import tempfile
import threading
import time
from collections.abc import Callable, Mapping
from contextlib import suppress
from pathlib import Path
from typing import TYPE_CHECKING

from omegaconf import DictConfig

from mnist_exp.interrupts import deferred
from mnist_exp.quiet import registry_notes_filtered
from mnist_exp.results.leaderboard import JobResult, Leaderboard, write_leaderboard
from mnist_exp.results.metric_names import OBJECTIVE, SWEEP, TEST_ACCURACY, read
from mnist_exp.tracking.model_loading import logged_model_uri
from mnist_exp.tracking.owner import owner_alive, owner_tags
from mnist_exp.tracking.sqlite_runs import UnreadableStore, latest_run_tagged
from mnist_exp.tracking.store import absolute_store_uri, sqlite_path, store_errors, store_lock

if TYPE_CHECKING:
    from mlflow import MlflowClient
    from mlflow.entities import Run

PARENT_TAG = "sweep.role"
BEST_TAG = "sweep.best"
FINGERPRINT_TAG = "sweep.fingerprint"  # on a grid sweep's parent: its overrides, hashed
DIGEST_TAG = "sweep.config_digest"  # on every child: its resolved config, hashed
SKIPPED_TAG = "sweep.skipped_jobs"  # on a parent: jobs its last attempt did not re-run
TRIAL_STATE_TAG = "sweep.trial_state"  # on an Optuna trial's run the pruner stopped: PRUNED
REGISTER_AS = "mnist-best"  # the name the printed registration command uses


class SweepRecorder:
    """The parent run of one sweep in the store at ``uri``."""

    def __init__(
        self, run_id: str, uri: str, experiment_id: str, started_ms: int | None = None
    ) -> None:
        self.run_id = run_id
        self.uri = uri
        self.experiment_id = experiment_id
        # When this attempt of the sweep began (default now), in the unit of MLflow's run
        # start times.
        self.started_ms = int(time.time() * 1000) if started_ms is None else started_ms

    @classmethod
    def open(
        cls,
        tracking_cfg: DictConfig,
        sweep_dir: str,
        sweeper: str,
        documents: Mapping[str, str],
        fingerprint: str | None = None,
        varies: str = "",
        started_ms: int | None = None,
    ) -> SweepRecorder:
        """Create the parent run of the sweep in ``sweep_dir`` (the experiment first, if it
        is new), named by its folder and what it ``varies``, tagged with the user's note
        and tags (``tracking.note``, ``tracking.tags``), its role, folder, ``sweeper``,
        owner, ``fingerprint`` (if any) and source (the command, as MLflow tags a run it
        starts itself), and log ``documents`` (artifact file name -> text) on it. It starts
        at ``started_ms`` (ms since the epoch; default now): when the sweep started, which
        may be before its record opens. A store that cannot be used raises StoreError
        (one line)."""
        from mlflow.tracking.context.registry import resolve_tags

        from mnist_exp.tracking.recorder import note_and_tags, open_experiment

        experiment_id = open_experiment(tracking_cfg)
        uri = absolute_store_uri(tracking_cfg.uri)
        client = _client(uri)
        tags = {
            **note_and_tags(tracking_cfg),
            PARENT_TAG: "parent",
            "sweep": sweep_dir,
            "sweep.sweeper": sweeper,
            **owner_tags(),
            **({FINGERPRINT_TAG: fingerprint} if fingerprint else {}),
        }
        name = f"sweep {Path(sweep_dir).name}" + (f" ({varies})" if varies else "")
        with store_errors(uri):
            parent = client.create_run(
                experiment_id, start_time=started_ms, run_name=name, tags=resolve_tags(tags)
            )
            recorder = cls(parent.info.run_id, uri, experiment_id, started_ms)
            _open_parents[recorder.run_id] = recorder  # ended on exit from here on
            for name, text in documents.items():
                client.log_text(recorder.run_id, text, name)
        return recorder

    @staticmethod
    def latest_parent(tracking_cfg: DictConfig, fingerprint: str) -> str | None:
        """The run id of the most recent active sweep parent tagged with ``fingerprint`` in
        the configured experiment (None if there is none). An SQLite store is read
        directly, without importing MLflow (see :mod:`mnist_exp.tracking.sqlite_runs`)."""
        from mnist_exp.tracking.recorder import open_experiment

        wanted = {PARENT_TAG: "parent", FINGERPRINT_TAG: fingerprint}
        database = sqlite_path(str(tracking_cfg.uri))
        if database is not None and "?" not in str(tracking_cfg.uri):  # no URI parameters
            with suppress(UnreadableStore):
                return latest_run_tagged(database, tracking_cfg.experiment, wanted)
        experiment_id = open_experiment(tracking_cfg)
        uri = absolute_store_uri(tracking_cfg.uri)
        with store_errors(uri):
            found = _client(uri).search_runs(
                [experiment_id],
                filter_string=" AND ".join(f"tags.`{k}` = '{v}'" for k, v in wanted.items()),
                order_by=["attributes.start_time DESC"],
                max_results=1,
            )
        return found[0].info.run_id if found else None

    @classmethod
    def reopen(
        cls, tracking_cfg: DictConfig, run_id: str, documents: Mapping[str, str]
    ) -> SweepRecorder | None:
        """The parent run ``run_id`` of an earlier sweep (of the same Optuna study, or the
        same grid) reopened, RUNNING again and owned by this process, tagged with this
        attempt's note and tags (``tracking.note``, ``tracking.tags``), with ``documents``
        logged again; None when it is not an active sweep parent in this store's experiment,
        or is still running in a live process (a concurrent sweeper: this one gets its own
        parent)."""
        from mlflow.exceptions import MlflowException

        from mnist_exp.tracking.recorder import note_and_tags, open_experiment

        experiment_id = open_experiment(tracking_cfg)
        uri = absolute_store_uri(tracking_cfg.uri)
        client = _client(uri)
        # Checked and claimed under the lock: two sweepers continuing one study at once
        # must not both take its parent (the first to end would end the other's runs).
        with store_lock(uri):
            try:
                run = client.get_run(run_id)
            except MlflowException:  # not in this store
                return None
            if (
                run.info.experiment_id != experiment_id
                or run.info.lifecycle_stage != "active"
                or run.data.tags.get(PARENT_TAG) != "parent"
                or (run.info.status == "RUNNING" and owner_alive(run.data.tags) is not False)
            ):
                return None
            recorder = cls(run_id, uri, experiment_id)
            _open_parents[run_id] = recorder  # ended on exit from here on, whatever happens
            with store_errors(uri):
                client.update_run(run_id, status="RUNNING")
                for key, value in {**note_and_tags(tracking_cfg), **owner_tags()}.items():
                    client.set_tag(run_id, key, value)
        for name, text in documents.items():
            client.log_text(run_id, text, name)
        return recorder

    def child_results(
        self, is_config_param: Callable[[str], bool], one_per_config: bool = False
    ) -> list[JobResult]:
        """The child runs, oldest first, as leaderboard entries keeping the params for
        which ``is_config_param`` holds; with ``one_per_config`` (a resumed grid sweep
        re-runs its failed jobs), of the runs of one config only the one that finished,
        else the latest. Read when the sweep's jobs are over: a child still RUNNING (its
        process was killed: a worker, or the sweeper of an earlier attempt) is ended
        KILLED first, so that the leaderboard says how it ended."""
        children = self._closed_children(_client(self.uri))
        return [
            JobResult(
                run_id=run.info.run_id,
                status=run.info.status,
                params={k: v for k, v in run.data.params.items() if is_config_param(k)},
                val_accuracy=read(run.data.metrics, OBJECTIVE),
                test_accuracy=read(run.data.metrics, TEST_ACCURACY),
                error=run.data.tags.get("error"),
                pruned=run.data.tags.get(TRIAL_STATE_TAG) == "PRUNED",
                name=run.info.run_name or "",
            )
            for run in (_current(children) if one_per_config else children)
        ]

    def skipped_jobs(self) -> int:
        """How many configs finished in an earlier attempt of this sweep, so that this
        attempt's jobs skipped them."""
        return len(
            {
                run.data.tags.get(DIGEST_TAG, run.info.run_id)
                for run in self._children(_client(self.uri))
                if run.info.status == "FINISHED" and run.info.start_time < self.started_ms
            }
        )

    def publish(self, board: Leaderboard, skipped: int) -> None:
        """Log the leaderboard's files and counts (``skipped``: jobs not re-run, see
        :meth:`skipped_jobs`) on the parent, and tag the best child (and name it on the
        parent)."""
        client = _client(self.uri)
        client.set_tag(self.run_id, SKIPPED_TAG, str(skipped))
        with tempfile.TemporaryDirectory() as folder:
            write_leaderboard(board, Path(folder))
            client.log_artifacts(self.run_id, folder)
        counts = {"finished": board.ranked, "failed": board.failed, "pruned": board.pruned}
        for outcome, runs in counts.items():
            client.log_metric(self.run_id, f"{SWEEP}{outcome}_runs", len(runs))
        if board.best is not None:
            client.set_tag(board.best.run_id, BEST_TAG, "true")
            client.set_tag(self.run_id, "best_run_id", board.best.run_id)
            best = {"best_val_accuracy": board.best.val_accuracy}
            if board.best.test_accuracy is not None:
                best["best_test_accuracy"] = board.best.test_accuracy
            for name, value in best.items():
                client.log_metric(self.run_id, f"{SWEEP}{name}", value)

    def register_best(self, board: Leaderboard, name: str | None) -> str | None:
        """Register the best child's model as a new version of ``name``; return
        ``name/version`` (None when there is no name or no finished child)."""
        if not name or board.best is None:
            return None
        import mlflow

        mlflow.set_tracking_uri(self.uri)
        model = logged_model_uri(_client(self.uri), board.best.run_id)
        with registry_notes_filtered():
            version = mlflow.register_model(model, name)
        return f"{name}/{version.version}"

    def end(self, status: str) -> None:
        """End the parent with ``status``; a child still marked RUNNING (its worker was
        killed) is ended KILLED, since its sweep is over."""
        client = _client(self.uri)
        self._closed_children(client)
        client.set_terminated(self.run_id, status)
        _open_parents.pop(self.run_id, None)

    def _closed_children(self, client: MlflowClient) -> list[Run]:
        """The parent's child runs, oldest first, each one still RUNNING ended KILLED
        first (called once the sweep's jobs are over: no child runs any more)."""
        children = self._children(client)
        running = [child.info.run_id for child in children if child.info.status == "RUNNING"]
        for run_id in running:
            client.set_terminated(run_id, "KILLED")
        return self._children(client) if running else children

    def _children(self, client: MlflowClient) -> list[Run]:
        """The parent's child runs, oldest first."""
        experiment_id = client.get_run(self.run_id).info.experiment_id
        return client.search_runs(
            [experiment_id],
            filter_string=f"tags.`mlflow.parentRunId` = '{self.run_id}'",
            order_by=["attributes.start_time ASC"],
            max_results=10_000,
        )


# Parent runs this process opened and has not ended yet, by run id.
_open_parents: dict[str, SweepRecorder] = {}


class ParentOnDemand:
    """A sweep's parent run that is created when it is first needed, once.

    The jobs of a sequential sweep run in the launching process, and the first of them
    needs the parent only when its own run opens, as training starts: MLflow then loads
    while that job trains, not before the sweep starts (about 2.5 s on two cores). Safe to
    ask from any thread. A creation that failed is not tried again: every later caller
    gets its error (one parent per sweep, or none).
    """

    def __init__(self, open_parent: Callable[[], SweepRecorder]) -> None:
        self._open_parent = open_parent
        self._lock = threading.Lock()
        self._recorder: SweepRecorder | None = None
        self._failed: BaseException | None = None

    def recorder(self) -> SweepRecorder:
        """The parent run, created now if it was not yet; raises what its creation raised."""
        with self._lock:
            if self._recorder is None and self._failed is None:
                try:
                    with deferred():  # a Ctrl-C cannot leave it created but unknown here
                        self._recorder = self._open_parent()
                except BaseException as error:
                    self._failed = error
            if self._failed is not None:
                raise self._failed
            assert self._recorder is not None
            return self._recorder


# The parent on demand of the sweep this process launches (see parent_on_demand_id).
_on_demand: list[ParentOnDemand] = []


def open_on_demand(open_parent: Callable[[], SweepRecorder]) -> ParentOnDemand:
    """The sweep's parent run, to be created by ``open_parent`` when first needed (by a
    job through :func:`parent_on_demand_id`, or by whoever holds the returned object)."""
    _on_demand[:] = [ParentOnDemand(open_parent)]
    return _on_demand[0]


def parent_on_demand_id() -> str:
    """The id of the parent run of the sweep this process launches, created now if it was
    not yet (see :func:`open_on_demand`)."""
    if not _on_demand:
        raise RuntimeError("no sweep parent run to open on demand in this process")
    return _on_demand[0].recorder().run_id


def open_sweeps() -> list[SweepRecorder]:
    """The parent runs this process opened and has not ended yet."""
    return list(_open_parents.values())


def end_open_sweeps(status: str) -> list[str]:
    """End every parent run this process left open with ``status`` (see
    :meth:`SweepRecorder.end`); return their run ids."""
    _on_demand.clear()  # a parent not created by now has no children to end
    ended = open_sweeps()
    for recorder in ended:
        recorder.end(status)
    return [recorder.run_id for recorder in ended]


def finished_child(uri: str, parent_run_id: str, digest: str) -> tuple[str, float] | None:
    """A FINISHED child of ``parent_run_id`` in the store at ``uri`` whose config has
    ``digest`` (tag ``sweep.config_digest``), as its run id and validation accuracy; None if
    there is none."""
    uri = absolute_store_uri(uri)
    client = _client(uri)
    with store_errors(uri):
        experiment_id = client.get_run(parent_run_id).info.experiment_id
        found = client.search_runs(
            [experiment_id],
            filter_string=(
                f"tags.`mlflow.parentRunId` = '{parent_run_id}' AND "
                f"tags.`{DIGEST_TAG}` = '{digest}' AND attributes.status = 'FINISHED'"
            ),
            order_by=["attributes.start_time DESC"],
            max_results=1,
        )
    objective = read(found[0].data.metrics, OBJECTIVE) if found else None
    return None if objective is None else (found[0].info.run_id, objective)


def register_command(tracking_uri: str, run_id: str) -> str:
    """The shell command that registers run ``run_id``'s model in the store at
    ``tracking_uri``."""
    uri = absolute_store_uri(tracking_uri)
    return (
        f"python -c \"import mlflow; mlflow.set_tracking_uri('{uri}'); mlflow.register_model("
        f"'{logged_model_uri(_client(uri), run_id)}', '{REGISTER_AS}')\""
    )


def _current(runs: list[Run]) -> list[Run]:
    """Of ``runs`` (oldest first), per config digest the last one that FINISHED, else the
    last one; runs without a digest all stay. The order is kept."""
    kept: dict[str, Run] = {}
    for run in runs:
        key = run.data.tags.get(DIGEST_TAG, run.info.run_id)
        earlier = kept.get(key)
        if earlier is None or earlier.info.status != "FINISHED" or run.info.status == "FINISHED":
            kept[key] = run
    chosen = {run.info.run_id for run in kept.values()}
    return [run for run in runs if run.info.run_id in chosen]


def _client(uri: str) -> MlflowClient:
    from mlflow import MlflowClient

    return MlflowClient(tracking_uri=uri)
