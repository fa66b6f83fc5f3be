"""Find an interrupted run's checkpoint and config, so ``resume=<run id or folder>`` can
continue it in the same MLflow run."""

from __future__ import annotations

from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from mnist_exp.config.schema import ConfigError, validate
from mnist_exp.tracking.owner import describe_owner, owner_alive
from mnist_exp.tracking.store import GC_COMMAND
from mnist_exp.tracking.stored_runs import RUN_ID, RunNotFound, StoredRun, find_run
from mnist_exp.training.checkpoint import Checkpoint, checkpoint_folder
from mnist_exp.training.devices import BACKEND_TAG


def load_resume(reference: str, tracking_uri: str) -> tuple[DictConfig, Checkpoint]:
    """The validated config and last checkpoint of the run ``reference`` names: its output
    folder, or its MLflow run id (looked up in ``tracking_uri``).

    A run configured with ``train.backend=auto`` continues on the backend it trained on.
    Only a run that can be continued is accepted: KILLED or FAILED, or RUNNING with its
    process gone (killed without a chance to say so). A FINISHED run, a run whose process
    is still alive, and a checkpoint that belongs to another run are refused.
    """
    if not reference.strip():
        raise ConfigError("resume= is empty: give the run id or output folder of a run to continue")
    folder = Path(reference)
    if folder.is_dir():
        checkpoint = Checkpoint.load(checkpoint_folder(reference))
        run = _stored_run(checkpoint.run_id, tracking_uri, reference)
    else:
        if not RUN_ID.fullmatch(reference):
            raise ConfigError(f"resume={reference}: neither a run folder nor an MLflow run id")
        run = _stored_run(reference, tracking_uri, reference)
        if "output_dir" not in run.tags:
            raise ConfigError(
                f"resume={reference}: the run has no output_dir tag to find its files"
            )
        folder = Path(run.tags["output_dir"])
        checkpoint = Checkpoint.load(checkpoint_folder(run.tags["output_dir"]))
        if checkpoint.run_id != reference:
            raise ConfigError(
                f"resume={reference}: the checkpoint in {folder} belongs to run "
                f"{checkpoint.run_id}, not this one"
            )
    _check_resumable(run, reference)
    saved_config = folder / ".hydra" / "config.yaml"
    if not saved_config.is_file():
        raise ConfigError(f"resume={reference}: {saved_config} is missing")
    config = validate(OmegaConf.load(saved_config))
    if config.train.backend == "auto" and run.tags.get(BACKEND_TAG):
        config.train.backend = run.tags[BACKEND_TAG]  # continue on the backend it trained on
    return config, checkpoint


def _check_resumable(run: StoredRun, reference: str) -> None:
    """Refuse a run that finished or whose process is still at it."""
    the_run = "the run" if reference == run.run_id else f"run {run.run_id}"
    if run.status == "FINISHED":
        raise ConfigError(
            f"resume={reference}: {the_run} is FINISHED; nothing to resume (start a new run)"
        )
    if run.status != "RUNNING":
        return
    alive = owner_alive(run.tags)
    owner = describe_owner(run.tags)
    if alive:
        raise ConfigError(
            f"resume={reference}: {the_run} is still RUNNING in {owner}; stop it first "
            "(Ctrl-C, or kill its process) or let it finish"
        )
    if alive is None:
        raise ConfigError(
            f"resume={reference}: {the_run} shows RUNNING in {owner}, which cannot be "
            f"checked from here; if that process is gone, mark the run KILLED with "
            f"{GC_COMMAND} --force {run.run_id}, then resume"
        )


def _stored_run(run_id: str, tracking_uri: str, reference: str) -> StoredRun:
    """The run ``run_id`` from the store at ``tracking_uri``; ConfigError naming
    ``reference`` if it is not there."""
    try:
        return find_run(run_id, tracking_uri)
    except RunNotFound as error:
        raise ConfigError(f"resume={reference}: {error}") from None
