"""``rerun=<run id>``: a new run built from an old run's record, with overrides on top.

:func:`load_rerun` reads the run's logged ``config.yaml``, lays the command line's
overrides over it (a fork: ``rerun=ID optimizer.learning_rate=3e-4``; a group option such
as ``optimizer=sgd`` replaces that whole section) and validates the result against
today's schema. Where to record (``tracking.*``) is always this command's. Before
training, :func:`provenance_changes` says what differs from the record (code, data,
versions, backend, device); after it, :func:`metrics_comparison` whether the final
metrics came out the same.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import TYPE_CHECKING

from omegaconf import DictConfig, OmegaConf

from mnist_exp.config.schema import ConfigError, validate
from mnist_exp.results.metric_names import OBJECTIVE, TEST_ACCURACY, TEST_LOSS
from mnist_exp.tracking.provenance import (
    COMMIT_TAG,
    DIRTY_TAG,
    requirements_text,
    source_provenance,
)
from mnist_exp.tracking.run_details import (
    RUNTIME_TAGS,
    RunDetails,
    parse_requirements,
    run_details,
)
from mnist_exp.tracking.run_table import KIND_TAG, open_client, resolve_run
from mnist_exp.tracking.store import absolute_store_uri
from mnist_exp.tracking.sweep_record import PARENT_TAG

if TYPE_CHECKING:
    from mnist_exp.data.splits import Splits
    from mnist_exp.training.runtime import Runtime

GROUPS = ("data", "model", "optimizer", "train")  # options that replace a whole section
OWN_KEYS = ("rerun", "tracking")  # this command's, never the record's
COMPARED = (OBJECTIVE, TEST_ACCURACY, TEST_LOSS)


def load_rerun(
    reference: str, cfg: DictConfig, overrides: list[str]
) -> tuple[DictConfig, RunDetails]:
    """The validated config of a rerun of the run ``reference`` names (looked up in
    ``cfg.tracking.uri``), with ``overrides`` (the command line's, as Hydra composed them
    into ``cfg``) laid over its record; and the recorded run.

    A sweep parent, an evaluation run, an unknown id, a run without a logged config, and
    a recorded config that no longer validates are each a one-line ConfigError."""
    uri = absolute_store_uri(str(cfg.tracking.uri))
    try:
        client = open_client(uri)
        run = resolve_run(client, uri, reference)
    except ConfigError as error:
        raise ConfigError(f"rerun={reference}: {error}") from None
    run_id = run.info.run_id
    if run.data.tags.get(PARENT_TAG) == "parent":
        raise ConfigError(
            f"rerun={reference}: run {run_id} is a sweep's parent run, not a training run; "
            f"rerun one of its jobs (python -m mnist_exp.runs ls --sweep {run_id[:8]})"
        )
    if run.data.tags.get(KIND_TAG) == "evaluation":
        raise ConfigError(f"rerun={reference}: run {run_id} is an evaluation, not a training run")
    details = run_details(client, run)
    if details.config_yaml is None:
        raise ConfigError(f"rerun={reference}: run {run_id} has no logged config.yaml to rerun")
    recorded = OmegaConf.create(details.config_yaml)
    forked = _forked(recorded, cfg, overrides, reference)
    forked.rerun = run_id
    try:
        return validate(forked), details
    except ConfigError as error:
        raise ConfigError(
            f"rerun={reference}: the recorded config no longer fits today's schema: {error}"
        ) from None


def _forked(
    recorded: DictConfig, cfg: DictConfig, overrides: list[str], reference: str
) -> DictConfig:
    """``recorded`` with each overridden key (or group section) taken from ``cfg``."""
    from hydra.core.override_parser.overrides_parser import OverridesParser

    forked = OmegaConf.masked_copy(recorded, [k for k in recorded if k not in OWN_KEYS])
    for override in OverridesParser.create().parse_overrides(overrides):
        key = override.key_or_group.split("@", 1)[0]
        if key.split(".", 1)[0] in OWN_KEYS or key in ("resume", "hydra"):
            continue
        if override.is_delete() or key == "experiment":
            raise ConfigError(
                f"rerun={reference}: {override.input_line} cannot be laid over a recorded "
                "config; override single keys instead (key=value)"
            )
        OmegaConf.update(forked, key, OmegaConf.select(cfg, key), merge=False, force_add=True)
    for key in OWN_KEYS:
        forked[key] = cfg[key]
    forked.resume = None
    return forked


def provenance_changes(record: RunDetails, now: Mapping[str, str]) -> list[str]:
    """One line per thing that differs between the recorded run and this one (``now``,
    keyed as :meth:`RunDetails.provenance`): ``commit: abc123 -> def456 (dirty)``."""
    recorded = record.provenance()
    lines = []
    if not record.versions:
        lines.append("versions: not recorded (the run predates environment/requirements.txt)")
    for key in dict.fromkeys([*recorded, *now]):
        if key not in recorded and not record.versions:
            continue
        before, after = recorded.get(key, "unknown"), now.get(key, "unknown")
        if before != after:
            lines.append(f"{key}: {before} -> {after}")
    return lines


def announce_rerun(record: RunDetails, splits: Splits, runtime: Runtime) -> None:
    """Print, before training, what differs between the recorded run and this rerun of
    it, one line each (or that nothing does)."""
    changes = provenance_changes(record, current_provenance(splits, runtime))
    head = f"rerun of {record.run_id[:8]} ({record.name})"
    if not changes:
        print(f"{head}: same commit, data, versions, backend and device as recorded")
        return
    print(f"{head}: differs from the record in")
    for line in changes:
        print(f"  {line}")


def current_provenance(splits: Splits, runtime: Runtime) -> dict[str, str]:
    """This process's provenance, keyed as :meth:`RunDetails.provenance`: the code's
    commit, the data, the stack's versions, backend and device."""
    from mnist_exp.tracking.lineage import data_identity

    tags = source_provenance().tags
    commit = tags.get(COMMIT_TAG, "unknown")
    if tags.get(DIRTY_TAG) == "true":
        commit += " (dirty)"
    found = {"commit": commit}
    found |= {
        f"data ({context})": f"{name} {digest}"
        for context, (name, digest) in data_identity(splits).items()
    }
    found |= parse_requirements(requirements_text())
    found |= {key: value for key, value in runtime.tags().items() if key in RUNTIME_TAGS}
    return found


def metrics_comparison(recorded: Mapping[str, float], now: Mapping[str, float]) -> str:
    """Whether the rerun's final metrics equal the recorded run's: ``the same final
    metrics as the original`` or each difference (``final/test_accuracy 0.9801 -> 0.9794
    (-0.0007)``)."""
    differences = []
    for name in COMPARED:
        before, after = recorded.get(name), now.get(name)
        if before is None or after is None:
            continue
        if not math.isclose(before, after, rel_tol=0, abs_tol=1e-9):
            differences.append(f"{name} {before:.4f} -> {after:.4f} ({after - before:+.4f})")
    if not differences:
        return "the same final metrics as the original"
    return "differs from the original: " + "; ".join(differences)
