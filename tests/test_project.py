"""The promises around the code: documented keys, packaged configs, the CI entry point."""

from __future__ import annotations

import dataclasses
import tomllib
from pathlib import Path

from mnist_exp.config.schema import OPTIMIZERS, EvaluateConfig, ExperimentConfig

REPO = Path(__file__).resolve().parents[1]


def schema_keys() -> set[str]:
    """Every documented key: the run's config and the evaluate command's own keys."""
    keys = set()
    for root in (ExperimentConfig, EvaluateConfig):
        for section in dataclasses.fields(root):
            if not dataclasses.is_dataclass(section.default_factory):
                keys.add(section.name)
                continue
            if section.name == "optimizer":
                classes = OPTIMIZERS.values()
            else:
                classes = [section.default_factory]
            for cls in classes:
                keys |= {f"{section.name}.{field.name}" for field in dataclasses.fields(cls)}
    return keys


def test_readme_config_reference_documents_every_key():
    readme = (REPO / "README.md").read_text()
    reference = readme.split("## Config reference", 1)[1]
    missing = sorted(key for key in schema_keys() if f"`{key}`" not in reference)
    assert not missing, f"README's config reference lacks {missing}"


def test_every_config_group_is_packaged_into_the_wheel():
    packages = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"][
        "packages"
    ]
    groups = {path.name for path in (REPO / "conf").iterdir() if path.is_dir()}
    groups.discard("__pycache__")
    assert {f"mnist_exp.conf.{group}" for group in groups} <= set(packages)


def test_ci_runs_the_readme_test_command():
    assert "make test" in (REPO / "README.md").read_text()
    assert "make test" in (REPO / ".ci" / "run").read_text()
