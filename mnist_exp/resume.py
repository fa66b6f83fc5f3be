"""Find an interrupted run's checkpoint and config, so ``resume=<run id or folder>`` can
continue it in the same MLflow run."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from mnist_exp.config import ConfigError, validate

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
    folder, or its MLflow run id (looked up in ``tracking_uri``)."""
    folder = Path(reference)
    if not folder.is_dir():
        folder = _output_folder_of_run(reference, tracking_uri)
    saved_config = folder / ".hydra" / "config.yaml"
    if not saved_config.is_file():
        raise ConfigError(f"resume={reference}: {saved_config} is missing")
    config = validate(OmegaConf.load(saved_config))
    return config, Checkpoint.load(folder / CHECKPOINTS)


def _output_folder_of_run(run_id: str, tracking_uri: str) -> Path:
    if not RUN_ID.fullmatch(run_id):
        raise ConfigError(f"resume={run_id}: neither a run folder nor an MLflow run id")
    from mlflow import MlflowClient
    from mlflow.exceptions import MlflowException

    from mnist_exp.tracking import absolute_store_uri, sqlite_path

    uri = absolute_store_uri(tracking_uri)
    if (path := sqlite_path(uri)) is not None and not path.is_file():
        raise ConfigError(f"resume={run_id}: no MLflow store at {uri} (set tracking.uri)")
    try:
        run = MlflowClient(tracking_uri=uri).get_run(run_id)
    except MlflowException as error:
        raise ConfigError(f"resume={run_id}: {str(error).splitlines()[0]}") from None
    if "output_dir" not in run.data.tags:
        raise ConfigError(f"resume={run_id}: the run has no output_dir tag to find its files")
    return Path(run.data.tags["output_dir"])
