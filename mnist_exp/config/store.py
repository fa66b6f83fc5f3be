"""The schema's defaults in Hydra's ConfigStore: the bases every YAML option extends.

Each option under ``conf/`` starts from its schema and sets only what it changes::

    # conf/optimizer/sgd.yaml            # conf/model/mlp.yaml
    defaults:                            defaults:
      - /schema_optimizer_sgd              - /schema_model_mlp
      - _self_                             - _self_
                                         name: mlp
                                         hidden_units: [512, 256]  ...

so the defaults are written once, in :mod:`mnist_exp.config.schema`. The bases are
registered under root-level names (``schema_<group>[_<variant>]``, plus ``schema_config``
and ``schema_evaluate`` for the top-level keys of ``config.yaml`` and ``evaluate.yaml``),
not inside the groups: there they would show up as options (``optimizer=schema_...``) in
``--help`` and in the "no such option; available: ..." errors.

They hold plain values, not the typed dataclasses: typed nodes would make Hydra reject a
bad value while it composes, with its own multi-line wording (and ``--cfg job`` would
refuse it too), where :func:`mnist_exp.config.schema.validate` names the key and what is
allowed in one line. ``conf/__init__.py`` calls :func:`register`: Hydra imports that package
to read the YAML files, so every composition (the commands, sweep jobs, the compose API in
tests) finds the bases, whatever was imported before.
"""

from __future__ import annotations

from typing import Any

from hydra.core.config_store import ConfigStore
from omegaconf import OmegaConf

from mnist_exp.config.schema import (
    VARIANTS,
    DataConfig,
    EvaluateConfig,
    RunConfig,
    TrackingConfig,
    TrainConfig,
    defaults,
)

# Groups with one schema for all their options.
GROUP_SCHEMAS: dict[str, type] = {
    "data": DataConfig,
    "train": TrainConfig,
    "tracking": TrackingConfig,
}
# The primary configs (conf/<name>.yaml) and the schema of their own top-level keys.
PRIMARY_SCHEMAS: dict[str, type] = {"config": RunConfig, "evaluate": EvaluateConfig}


def base_name(group: str, variant: str | None = None) -> str:
    """The ConfigStore name of a group's schema (``schema_train``), of one variant's
    (``schema_optimizer_sgd``), or of a primary config's top-level keys (``schema_config``)."""
    return f"schema_{group}" if variant is None else f"schema_{group}_{variant}"


def bases() -> dict[str, dict[str, Any]]:
    """Every base by its ConfigStore name: the schema's defaults as plain values."""
    found = {base_name(primary): defaults(cls) for primary, cls in PRIMARY_SCHEMAS.items()}
    found |= {base_name(group): defaults(cls) for group, cls in GROUP_SCHEMAS.items()}
    for group, (_, _, schemas) in VARIANTS.items():
        found |= {base_name(group, variant): defaults(cls) for variant, cls in schemas.items()}
    return found


def register() -> None:
    """Store every base in Hydra's ConfigStore (again is harmless: same names, same values).

    A free mapping (``tracking.tags``) is stored open, so that ``tracking.tags={a: b}``
    adds keys to it although Hydra closes the rest of the config to unknown keys."""
    store = ConfigStore.instance()
    for name, values in bases().items():
        node = OmegaConf.create(values)
        for key, value in values.items():
            if isinstance(value, dict):
                OmegaConf.set_struct(node[key], False)
        store.store(name=name, node=node, provider="mnist_exp")
