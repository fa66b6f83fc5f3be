"""The checkpoint a run saves after every epoch and a resumed run starts from.

A checkpoint is a folder (``checkpoints/`` in the run's output folder) holding the Keras
model with its optimizer state (:data:`MODEL_FILE`) and a JSON state (:data:`STATE_FILE`):
the MLflow run id, the epochs completed, the metric history so far and the dropout layers'
random-number states, which Keras does not save in the model. Both files are replaced
atomically after every epoch. Keras is imported only when a model is saved or restored, so
finding a checkpoint (``resume=``) can happen before the Keras backend is chosen.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from mnist_exp.config.schema import ConfigError

if TYPE_CHECKING:
    import keras

MODEL_FILE = "last.keras"  # model and optimizer state after the last completed epoch
STATE_FILE = "checkpoint.json"  # run id, epochs completed, metric history, RNG states
CHECKPOINTS = "checkpoints"  # inside the run's output folder


def checkpoint_folder(output_dir: str | Path) -> Path:
    """Where the run with output folder ``output_dir`` keeps its checkpoint."""
    return Path(output_dir) / CHECKPOINTS


def _seed_states(model: keras.Model) -> list:
    """The random-number states of the model's dropout layers, in layer order."""
    return [v for v in model.variables if v.path.endswith("seed_generator_state")]


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

    def restore_model(self) -> keras.Model:
        """The checkpointed model with its weights, optimizer state and dropout RNG states."""
        import keras

        model = keras.models.load_model(self.model_path)
        for variable, state in zip(_seed_states(model), self.seed_states, strict=True):
            variable.assign(state)
        return model


def saved_epoch(folder: Path) -> int | None:
    """The epochs completed in the checkpoint in ``folder``; None if it holds none."""
    try:
        return Checkpoint.load(folder).epoch
    except ConfigError:
        return None


class _CheckpointWriter:
    """Replaces the checkpoint in ``folder`` with the model's state after each epoch,
    keeping the metric history (continued from ``resume_from``'s, if given)."""

    def __init__(
        self, folder: Path, run_id: Callable[[], str], resume_from: Checkpoint | None
    ) -> None:
        self.folder = folder
        self.run_id = run_id
        self.history = {
            key: list(values)
            for key, values in (resume_from.history if resume_from else {}).items()
        }

    def write(self, model: keras.Model, epoch: int, logs: dict | None) -> None:
        """Write the model and the state that names it to temp files, then move both into
        place; a failed write (a full disk) leaves the last good checkpoint and no litter."""
        for key, value in (logs or {}).items():
            self.history.setdefault(key, []).append(float(value))
        self.folder.mkdir(parents=True, exist_ok=True)
        state = {
            "run_id": self.run_id(),
            "epoch": epoch + 1,
            "history": self.history,
            "seed_states": [variable.numpy().tolist() for variable in _seed_states(model)],
        }
        partial_model = self.folder / f"partial-{MODEL_FILE}"
        partial_state = self.folder / f"{STATE_FILE}.partial"
        try:
            model.save(partial_model)
            partial_state.write_text(json.dumps(state))
        except BaseException:
            partial_model.unlink(missing_ok=True)
            partial_state.unlink(missing_ok=True)
            raise
        os.replace(partial_model, self.folder / MODEL_FILE)
        os.replace(partial_state, self.folder / STATE_FILE)


def checkpoint_writer(
    model: keras.Model,
    folder: Path,
    run_id: Callable[[], str],
    resume_from: Checkpoint | None = None,
) -> Callable[[int, dict | None], None]:
    """A function ``(epoch, logs)`` that atomically replaces ``model``'s checkpoint in
    ``folder`` after an epoch, for the MLflow run whose id ``run_id()`` gives (asked at
    each write: the run may still be opening when training starts), continuing
    ``resume_from``'s history; :class:`mnist_exp.training.fit.EpochMetricsCallback` calls
    it together with the epoch's logging."""
    writer = _CheckpointWriter(folder, run_id, resume_from)
    return lambda epoch, logs: writer.write(model, epoch, logs)
