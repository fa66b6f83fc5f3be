"""The promises around the code: documented keys, packaged configs, the CI entry point."""

from __future__ import annotations

import dataclasses
import tomllib
from pathlib import Path

from mnist_exp.config import reference
from mnist_exp.config.schema import VARIANTS, EvaluateConfig, RunConfig, sections

REPO = Path(__file__).resolve().parents[1]


def schema_keys() -> set[str]:
    """Every key a user can set: the run's config (every optimizer's and every model
    type's keys) and the evaluate command's own keys."""
    keys = set()
    for root in (RunConfig, EvaluateConfig):
        keys |= {field.name for field in dataclasses.fields(root)} - set(sections(root))
        for name, section in sections(root).items():
            classes = VARIANTS[name][2].values() if name in VARIANTS else [section]
            for cls in classes:
                keys |= {f"{name}.{field.name}" for field in dataclasses.fields(cls)}
    return keys


def test_config_reference_is_generated_from_the_current_schema():
    committed = (REPO / "docs" / "config.md").read_text()
    assert committed == reference.render(), (
        "docs/config.md is stale: regenerate it from the repository root with "
        f"`{reference.REGENERATE}` and commit it"
    )


def test_config_reference_documents_every_key():
    page = (REPO / "docs" / "config.md").read_text()
    missing = sorted(key for key in schema_keys() if f"`{key}`" not in page)
    assert not missing, f"docs/config.md lacks {missing}"
    assert {"model.conv_filters", "optimizer.weight_decay", "run_id"} <= schema_keys()


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
