"""Find an interrupted run's checkpoint and config, so ``resume=<run id or folder>`` can
continue it in the same MLflow run."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from omegaconf import DictConfig, OmegaConf

from mnist_exp.config.schema import ConfigError, validate

if TYPE_CHECKING:
    from mlflow.entities import Run

MODEL_FILE = "last.keras"  # model and optimizer state after the last completed epoch
STATE_FILE = "checkpoint.json"  # run id, epochs completed, metric history
CHECKPOINTS = "checkpoints"  # inside the run's output folder
RUN_ID = re.compile(r"[0-9a-f]{32}")  # an MLflow run id


@dataclass(frozen=True)
class Checkpoint:
    """The state saved after an epoch: what a resumed run starts from."""

    folder: Path
    run_id: str
    epoch: int  # epochs completed
    history: dict[str, list[float]]
    seed_states: list[list[int]]  # dropout RNG states: Keras does not save them in the model

    @property
    def model_path(self) -> Path:
        """The saved Keras model."""
        return self.folder / MODEL_FILE

    @classmethod
    def load(cls, folder: Path) -> Checkpoint:
        """Read the checkpoint in ``folder``; ConfigError if there is none or it is unusable."""
        try:
            state = json.loads((folder / STATE_FILE).read_text())
            checkpoint = cls(
                folder,
                state["run_id"],
                int(state["epoch"]),
                state["history"],
                state["seed_states"],
            )
        except (OSError, ValueError, KeyError, TypeError) as error:
            raise ConfigError(f"resume: no usable checkpoint in {folder} ({error})") from None
        if not checkpoint.model_path.is_file():
            raise ConfigError(f"resume: {checkpoint.model_path} is missing")
        return checkpoint


def load_resume(reference: str, tracking_uri: str) -> tuple[DictConfig, Checkpoint]:
    """The validated config and last checkpoint of the run ``reference`` names: its output
    folder, or its MLflow run id (looked up in ``tracking_uri``).

    Only a run that can be continued is accepted: KILLED or FAILED, or RUNNING with its
    process gone (killed without a chance to say so). A FINISHED run, a run whose process
    is still alive, and a checkpoint that belongs to another run are refused.
    """
    folder = Path(reference)
    if folder.is_dir():
        checkpoint = Checkpoint.load(folder / CHECKPOINTS)
        run = _stored_run(checkpoint.run_id, tracking_uri, reference)
    else:
        if not RUN_ID.fullmatch(reference):
            raise ConfigError(f"resume={reference}: neither a run folder nor an MLflow run id")
        run = _stored_run(reference, tracking_uri, reference)
        if "output_dir" not in run.data.tags:
            raise ConfigError(
                f"resume={reference}: the run has no output_dir tag to find its files"
            )
        folder = Path(run.data.tags["output_dir"])
        checkpoint = Checkpoint.load(folder / CHECKPOINTS)
        if checkpoint.run_id != reference:
            raise ConfigError(
                f"resume={reference}: the checkpoint in {folder} belongs to run "
                f"{checkpoint.run_id}, not this one"
            )
    _check_resumable(run, reference)
    saved_config = folder / ".hydra" / "config.yaml"
    if not saved_config.is_file():
        raise ConfigError(f"resume={reference}: {saved_config} is missing")
    return validate(OmegaConf.load(saved_config)), checkpoint


def _check_resumable(run: Run, reference: str) -> None:
    """Refuse a run that finished or whose process is still at it."""
    from mnist_exp.tracking.owner import describe_owner, owner_alive
    from mnist_exp.tracking.store import GC_COMMAND

    run_id, status = run.info.run_id, run.info.status
    the_run = "the run" if reference == run_id else f"run {run_id}"
    if status == "FINISHED":
        raise ConfigError(
            f"resume={reference}: {the_run} is FINISHED; nothing to resume (start a new run)"
        )
    if status != "RUNNING":
        return
    alive = owner_alive(run.data.tags)
    owner = describe_owner(run.data.tags)
    if alive:
        raise ConfigError(
            f"resume={reference}: {the_run} is still RUNNING in {owner}; stop it first "
            "(Ctrl-C, or kill its process) or let it finish"
        )
    if alive is None:
        raise ConfigError(
            f"resume={reference}: {the_run} shows RUNNING in {owner}, which cannot be "
            f"checked from here; if that process is gone, mark the run KILLED with "
            f"{GC_COMMAND} --force {run_id}, then resume"
        )


def _stored_run(run_id: str, tracking_uri: str, reference: str) -> Run:
    """The run ``run_id`` from the store at ``tracking_uri``; ConfigError if it is not there."""
    from mlflow import MlflowClient
    from mlflow.exceptions import MlflowException

    from mnist_exp.tracking.store import absolute_store_uri, sqlite_path, store_errors

    uri = absolute_store_uri(tracking_uri)
    if (path := sqlite_path(uri)) is not None and not path.is_file():
        raise ConfigError(f"resume={reference}: no MLflow store at {uri} (set tracking.uri)")
    try:
        with store_errors(uri):
            return MlflowClient(tracking_uri=uri).get_run(run_id)
    except MlflowException as error:
        raise ConfigError(f"resume={reference}: {str(error).splitlines()[0]}") from None
