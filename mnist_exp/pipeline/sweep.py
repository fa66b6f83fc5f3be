"""A sweep as one MLflow group: a parent run per multirun, its leaderboard, its best child.

:class:`SweepCallback` is a Hydra callback (see ``hydra.callbacks`` in ``conf/config.yaml``).
In the launching process, before any job starts, it validates every job of a grid sweep,
creates the experiment (so parallel jobs never race to create the SQLite store) and the
parent run. Each job gets the parent's run id (an id that cannot collide, unlike a
folder named by the time) through its environment and logs as a child. When the
sweep ends, the callback ranks the children, prints the leaderboard, logs it to the parent
and tags the best child. The parent run's record is
:class:`mnist_exp.tracking.sweep_record.SweepRecorder`'s; MLflow is imported only when a
sweep really runs.
"""

from __future__ import annotations

import os
import sys
from functools import partial
from typing import TYPE_CHECKING, Any

from hydra.experimental.callback import Callback
from omegaconf import DictConfig, OmegaConf, read_write

from mnist_exp.config.schema import ConfigError, validate
from mnist_exp.errors import exit_with_error
from mnist_exp.results.leaderboard import Leaderboard
from mnist_exp.results.summary import sweep_summary
from mnist_exp.tracking.preflight import check_store
from mnist_exp.tracking.store import ui_command
from mnist_exp.tracking.sweep_record import (
    SweepRecorder,
    end_open_sweeps,
    open_sweeps,
    register_command,
)

if TYPE_CHECKING:
    from mnist_exp.pipeline.search import Search

# Params a run logs beside its config, counted from the model (see one_run.run_one).
PARAM_COUNT_KEYS = ("model.total_params", "model.trainable_params")
BASIC_SWEEPER = "hydra._internal.core_plugins.basic_sweeper.BasicSweeper"
OPTUNA_SWEEPER = "hydra_plugins.mnist_exp_optuna.optuna_sweeper.OptunaSweeper"
PARENT_RUN_ENV = "MNIST_EXP_SWEEP_PARENT_RUN"  # set in every job of a sweep
TRIAL_ENV = "MNIST_EXP_OPTUNA_TRIAL"  # set in every job of an Optuna sweep: its trial number


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
            search = _check_search(config)
            sweep_spec = {
                "overrides": list(config.hydra.overrides.task),
                "sweeper": OmegaConf.to_container(config.hydra.sweeper, resolve=False),
                "launcher": OmegaConf.to_container(config.hydra.launcher, resolve=False),
            }
            documents = {
                "sweep.yaml": OmegaConf.to_yaml(sweep_spec),
                "config.yaml": OmegaConf.to_yaml(typed),
            }
            # A continued Optuna study continues its parent run too, if it can.
            earlier = search.parent_run_id() if search is not None else None
            parent = (
                SweepRecorder.reopen(typed.tracking, earlier, documents) if earlier else None
            ) or SweepRecorder.open(
                typed.tracking,
                sweep_dir=str(config.hydra.sweep.dir),
                sweeper=str(config.hydra.sweeper._target_).rsplit(".", 1)[-1],
                documents=documents,
            )
            if search is not None:
                search.remember_parent_run(parent.run_id)
        except ConfigError as error:
            exit_with_error(str(error))
        # Every job's config is composed again from these overrides (on any launcher, in
        # any process), and Hydra sets hydra.job.env_set in the job's environment.
        with read_write(config.hydra.overrides):
            config.hydra.overrides.hydra.append(
                f"++hydra.job.env_set.{PARENT_RUN_ENV}={parent.run_id}"
            )
        print(
            f"sweep: MLflow parent run {parent.run_id} for {config.hydra.sweep.dir}",
            file=sys.stderr,
        )

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        """Rank the children, log and print the leaderboard, tag the best child, close up."""
        for parent in open_sweeps():
            board = Leaderboard.from_results(parent.child_results(_is_swept_candidate))
            parent.publish(board)
            registered = parent.register_best(board, config.tracking.get("register_as"))
            print(
                sweep_summary(
                    board,
                    str(config.hydra.sweep.dir),
                    parent.run_id,
                    registered,
                    partial(register_command, config.tracking.uri),
                    ui_command(config.tracking.uri),
                )
            )
        end_open_sweeps("FINISHED")


def sweep_parent_run() -> str | None:
    """The parent run id of the sweep this job belongs to (None outside a sweep)."""
    return os.environ.get(PARENT_RUN_ENV) or None


def sweep_trial() -> str | None:
    """The Optuna trial number this job runs (None outside an Optuna sweep)."""
    return os.environ.get(TRIAL_ENV) or None


def _is_swept_candidate(param: str) -> bool:
    """Config keys a sweep can vary (not where results are stored, not derived counts)."""
    return not param.startswith("tracking.") and param not in PARAM_COUNT_KEYS


def _check_search(config: DictConfig) -> Search | None:
    """For an Optuna sweep: check its settings and open its study before the parent run
    exists (Hydra calls this callback before it instantiates the sweeper)."""
    if config.hydra.sweeper._target_ != OPTUNA_SWEEPER:
        return None
    from mnist_exp.pipeline.search import SearchSettings, prepare_search

    return prepare_search(SearchSettings.of(config.hydra.sweeper), config)


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
