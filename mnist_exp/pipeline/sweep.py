"""A sweep as one MLflow group: a parent run per multirun, its leaderboard, its best child.

:class:`SweepCallback` is a Hydra callback (see ``hydra.callbacks`` in ``conf/config.yaml``).
In the launching process, before any job starts, it validates every job of a grid sweep,
creates the experiment (so parallel jobs never race to create the SQLite store) and the
parent run. Each job gets the parent's run id (an id that cannot collide, unlike a
folder named by the time) through its environment and logs as a child. When the
sweep ends, the callback ranks the children, prints the leaderboard, logs it to the parent
and tags the best child. MLflow is imported only when a sweep really runs.
"""

from __future__ import annotations

import os
import sys
import tempfile
from pathlib import Path
from typing import Any

from hydra.experimental.callback import Callback
from omegaconf import DictConfig, OmegaConf, read_write

from mnist_exp.config.schema import ConfigError, validate
from mnist_exp.errors import exit_with_error
from mnist_exp.results.leaderboard import (
    OBJECTIVE,
    JobResult,
    Leaderboard,
    csv_table,
    markdown_table,
    text_table,
)
from mnist_exp.tracking.preflight import check_store

# Params logged beside the config, derived from it (see experiment.run_experiment).
PARAM_COUNT_KEYS = ("model.total_params", "model.trainable_params")
STEPS_RUN_KEY = "train.steps_per_execution_run"  # what train.steps_per_execution=auto ran
BASIC_SWEEPER = "hydra._internal.core_plugins.basic_sweeper.BasicSweeper"
PARENT_TAG = "sweep.role"
PARENT_RUN_ENV = "MNIST_EXP_SWEEP_PARENT_RUN"  # set in every job of a sweep

# Parent runs this process opened and has not closed yet: run_id -> tracking URI.
_open_parents: dict[str, str] = {}


class SweepCallback(Callback):
    """Hydra callback that groups a multirun's jobs under one MLflow parent run."""

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        """Validate all grid jobs, create the experiment and the parent run.

        A config error ends the process here (Hydra would only warn about an exception
        raised by a callback and start the jobs anyway).
        """
        try:
            _validate_grid(config)
            typed = validate(OmegaConf.masked_copy(config, [k for k in config if k != "hydra"]))
            check_store(typed.tracking.uri)
            from mnist_exp.tracking import recorder as tracking
            from mnist_exp.tracking.owner import owner_tags
            from mnist_exp.tracking.store import store_errors

            experiment_id = tracking.open_experiment(typed.tracking)
            uri = tracking.absolute_store_uri(typed.tracking.uri)
            client = _client(uri)
            sweep_dir = str(config.hydra.sweep.dir)
            with store_errors(uri):
                parent = client.create_run(
                    experiment_id,
                    run_name=f"sweep {Path(sweep_dir).name}",
                    tags={
                        PARENT_TAG: "parent",
                        "sweep": sweep_dir,
                        "sweep.sweeper": str(config.hydra.sweeper._target_).rsplit(".", 1)[-1],
                        **owner_tags(),
                    },
                )
        except ConfigError as error:
            exit_with_error(str(error))
        _open_parents[parent.info.run_id] = uri
        # Every job's config is composed again from these overrides (on any launcher, in
        # any process), and Hydra sets hydra.job.env_set in the job's environment.
        with read_write(config.hydra.overrides):
            config.hydra.overrides.hydra.append(
                f"++hydra.job.env_set.{PARENT_RUN_ENV}={parent.info.run_id}"
            )
        sweep_spec = {
            "overrides": list(config.hydra.overrides.task),
            "sweeper": OmegaConf.to_container(config.hydra.sweeper, resolve=False),
            "launcher": OmegaConf.to_container(config.hydra.launcher, resolve=False),
        }
        client.log_text(parent.info.run_id, OmegaConf.to_yaml(sweep_spec), "sweep.yaml")
        client.log_text(parent.info.run_id, OmegaConf.to_yaml(typed), "config.yaml")
        print(f"sweep: MLflow parent run {parent.info.run_id} for {sweep_dir}", file=sys.stderr)

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        """Rank the children, log and print the leaderboard, tag the best child, close up."""
        for parent_id, uri in list(_open_parents.items()):
            client = _client(uri)
            board = _leaderboard(client, parent_id)
            _publish(client, parent_id, board)
            registered = _register_best(board, config.tracking.get("register_as"))
            print(_terminal_summary(board, parent_id, config, registered))
        end_open_sweeps("FINISHED")


def sweep_parent_run() -> str | None:
    """The parent run id of the sweep this job belongs to (None outside a sweep)."""
    return os.environ.get(PARENT_RUN_ENV) or None


def end_open_sweeps(status: str) -> None:
    """End every parent run this process left open with ``status``; a child still marked
    RUNNING (its worker was killed) is ended KILLED, since its sweep is over."""
    for parent_id, uri in list(_open_parents.items()):
        client = _client(uri)
        for child in _children(client, parent_id):
            if child.info.status == "RUNNING":
                client.set_terminated(child.info.run_id, "KILLED")
        client.set_terminated(parent_id, status)
        del _open_parents[parent_id]


def _client(uri: str | None = None):
    from mlflow import MlflowClient

    return MlflowClient(tracking_uri=uri)


def _children(client, parent_id: str) -> list:
    experiment_id = client.get_run(parent_id).info.experiment_id
    return client.search_runs(
        [experiment_id],
        filter_string=f"tags.`mlflow.parentRunId` = '{parent_id}'",
        order_by=["attributes.start_time ASC"],
        max_results=10_000,
    )


def _is_swept_candidate(param: str) -> bool:
    """Config keys a sweep can vary (not where results are stored, not derived counts)."""
    return not param.startswith("tracking.") and param not in {*PARAM_COUNT_KEYS, STEPS_RUN_KEY}


def _leaderboard(client, parent_id: str) -> Leaderboard:
    results = [
        JobResult(
            run_id=run.info.run_id,
            status=run.info.status,
            params={k: v for k, v in run.data.params.items() if _is_swept_candidate(k)},
            val_accuracy=run.data.metrics.get(OBJECTIVE),
            test_accuracy=run.data.metrics.get("test_accuracy"),
            error=run.data.tags.get("error"),
        )
        for run in _children(client, parent_id)
    ]
    return Leaderboard.from_results(results)


def _publish(client, parent_id: str, board: Leaderboard) -> None:
    rows = board.rows()
    with tempfile.TemporaryDirectory() as folder:
        out = Path(folder)
        (out / "leaderboard.csv").write_text(csv_table(rows))
        markdown = markdown_table(rows)
        if groups := board.seed_groups():
            markdown += "\n## Mean ± std over seeds\n\n" + markdown_table(groups)
        (out / "leaderboard.md").write_text(markdown)
        from mnist_exp.results.figures import objective_by_param

        objective_by_param(board, out / "objective_vs_params.png")
        client.log_artifacts(parent_id, folder)
    client.log_metric(parent_id, "finished_runs", len(board.ranked))
    client.log_metric(parent_id, "failed_runs", len(board.failed))
    if board.best is not None:
        client.set_tag(board.best.run_id, "sweep.best", "true")
        client.set_tag(parent_id, "best_run_id", board.best.run_id)
        client.log_metric(parent_id, f"best_{OBJECTIVE}", board.best.val_accuracy)
        if board.best.test_accuracy is not None:
            client.log_metric(parent_id, "best_test_accuracy", board.best.test_accuracy)


def _register_best(board: Leaderboard, name: str | None) -> str | None:
    """Register the best child's model as a new version of ``name``; return 'name/version'."""
    if not name or board.best is None:
        return None
    import mlflow

    version = mlflow.register_model(f"runs:/{board.best.run_id}/model", name)
    return f"{name}/{version.version}"


def _terminal_summary(
    board: Leaderboard, parent_id: str, config: DictConfig, registered: str | None
) -> str:
    from mnist_exp.tracking.recorder import absolute_store_uri, ui_command

    lines = [
        "",
        f"Sweep {config.hydra.sweep.dir}: {len(board.ranked)} finished, "
        f"{len(board.failed)} failed; ranked by validation accuracy (* = best)",
        text_table(board.rows()),
    ]
    if groups := board.seed_groups():
        lines += ["", "Mean ± std over seeds:", text_table(groups)]
    if board.best is not None:
        lines.append(f"\nbest run     {board.best.run_id} (tagged sweep.best=true)")
        if registered:
            lines.append(f"registered   models:/{registered}")
        else:
            lines.append(
                f"register it  python -c \"import mlflow; mlflow.set_tracking_uri('"
                f"{absolute_store_uri(config.tracking.uri)}'); mlflow.register_model("
                f"'runs:/{board.best.run_id}/model', 'mnist-best')\""
            )
    lines += [
        f"parent run   {parent_id} (leaderboard.csv, leaderboard.md, objective_vs_params.png)",
        f"open the UI  {ui_command(config.tracking.uri)}",
    ]
    return "\n".join(lines)


def _validate_grid(config: DictConfig) -> None:
    """Compose and validate every job of a basic (grid) sweep before any of them runs."""
    if config.hydra.sweeper._target_ != BASIC_SWEEPER:
        return
    from hydra import compose
    from hydra._internal.core_plugins.basic_sweeper import BasicSweeper
    from hydra.core.override_parser.overrides_parser import OverridesParser

    params = config.hydra.sweeper.get("params") or {}
    arguments = [f"{key}={value}" for key, value in params.items()]
    arguments += list(config.hydra.overrides.task)
    parsed = OverridesParser.create().parse_overrides(arguments)
    for batch in BasicSweeper.split_arguments(parsed, max_batch_size=None):
        for job_overrides in batch:
            job_config = compose(config.hydra.job.config_name, overrides=list(job_overrides))
            try:
                validate(job_config)
            except ConfigError as error:
                raise ConfigError(f"{error} (in sweep job {' '.join(job_overrides)})") from None
