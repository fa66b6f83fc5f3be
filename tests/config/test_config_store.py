"""One source of config facts: options extend the schema and set only what they change;
the generated reference follows the schema."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from omegaconf import OmegaConf

from mnist_exp.config import reference, store
from mnist_exp.config.schema import (
    MODEL_TYPES,
    MODELS,
    OPTIMIZERS,
    VARIANTS,
    EvaluateConfig,
    RunConfig,
    defaults,
)

CONF = Path(__file__).resolve().parents[2] / "conf"
SCHEMA_GROUPS = [*store.GROUP_SCHEMAS, *VARIANTS]
OPTIONS = [
    (group, path.stem) for group in SCHEMA_GROUPS for path in sorted((CONF / group).glob("*.yaml"))
]


def option_file(group: str, option: str) -> dict:
    """An option file's content, interpolations unresolved."""
    return OmegaConf.to_container(OmegaConf.load(CONF / group / f"{option}.yaml"))


@pytest.mark.parametrize(("group", "option"), OPTIONS, ids=[f"{g}={o}" for g, o in OPTIONS])
def test_every_option_extends_its_schema_and_sets_only_what_differs(group, option):
    content = option_file(group, option)
    base_entry, *rest = content.pop("defaults")
    assert rest == ["_self_"], f"{group}/{option}.yaml: extend only the schema base"
    base = store.bases()[base_entry.removeprefix("/")]
    if group in VARIANTS:
        key, _, schemas = VARIANTS[group]
        assert base_entry == f"/{store.base_name(group, content.get(key, base[key]))}"
        assert content.get(key, base[key]) in schemas
    for key, value in content.items():
        assert key in base, f"{group}/{option}.yaml sets {key}, which its schema lacks"
        assert value != base[key], (
            f"{group}/{option}.yaml repeats the schema's default {key}={value!r}: drop it"
        )


def test_optimizer_and_model_lists_match_the_schema():
    assert {path.stem for path in (CONF / "optimizer").glob("*.yaml")} == set(OPTIMIZERS)
    assert tuple(MODELS) == MODEL_TYPES
    assert all(schema.keras_class for schema in OPTIMIZERS.values())


@pytest.mark.parametrize(("primary", "root"), [("config", RunConfig), ("evaluate", EvaluateConfig)])
def test_primary_configs_take_their_own_keys_from_the_schema(primary, root):
    content = option_file(".", primary)
    assert store.base_name(primary) in content.pop("defaults")
    assert set(content) == {"hydra"}
    assert store.bases()[store.base_name(primary)] == defaults(root)


def test_default_config_is_the_schemas_defaults(make_config):
    expected = OmegaConf.to_container(OmegaConf.structured(RunConfig))
    assert OmegaConf.to_container(make_config()) == expected


@pytest.mark.parametrize("name", sorted(OPTIMIZERS))
def test_each_optimizer_option_is_its_schemas_defaults(make_config, name):
    composed = OmegaConf.to_container(make_config(f"optimizer={name}").optimizer)
    assert composed == OmegaConf.to_container(OmegaConf.structured(OPTIMIZERS[name]))


def test_the_config_package_registers_the_bases_for_any_composer(tmp_path):
    """Composing conf/ needs no import of ours first: Hydra imports mnist_exp.conf."""
    script = (
        "import sys\n"
        "from hydra import compose, initialize_config_module\n"
        "assert 'mnist_exp.config.store' not in sys.modules\n"
        "with initialize_config_module('mnist_exp.conf', version_base='1.3'):\n"
        "    cfg = compose('config', overrides=['optimizer=sgd', 'model=cnn'])\n"
        "print(cfg.seed, cfg.train.epochs, cfg.optimizer.momentum, cfg.model.conv_filters)\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", script], cwd=tmp_path, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["42", "10", "0.9", "[32,", "64]"]


def test_reference_check_flags_a_stale_page_and_names_the_command(tmp_path, capsys):
    page = tmp_path / "config.md"
    assert reference.main(["--output", str(page)]) == 0
    assert page.read_text() == reference.render()
    assert reference.main(["--check", "--output", str(page)]) == 0
    page.write_text(page.read_text().replace("Seeds Python", "Seeds"))
    assert reference.main(["--check", "--output", str(page)]) == 1
    assert reference.REGENERATE in capsys.readouterr().err
