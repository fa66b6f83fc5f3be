"""``--help`` at the speed of ``--cfg job``: Hydra's help page, composed through its compose API.

Hydra's own ``--help`` lists the config groups by copying its whole config repository
once for every group it looks at (about 85 copies here: 0.8 s of the page's 1.5 s). This
module renders the same template (``hydra.help.template``) with the same parts, the
app's config groups (the folders of ``mnist_exp/conf``, Hydra's own left out, as Hydra
does) and the composed config, for a command line of ``--help`` and overrides only; any
other flag goes to Hydra. ``tests/cli/test_help.py`` checks that both pages are equal.
"""

from __future__ import annotations

import string
from importlib import resources

from hydra import compose, initialize_config_module
from omegaconf import OmegaConf

CONFIG_MODULE = "mnist_exp.conf"
HELP_FLAG = "--help"


def help_overrides(arguments: list[str]) -> list[str] | None:
    """The overrides of a command line that asks only for ``--help`` (with overrides:
    the page shows the config they compose); None for any other command line."""
    if HELP_FLAG not in arguments:
        return None
    overrides = [argument for argument in arguments if argument != HELP_FLAG]
    if any(argument.startswith("-") for argument in overrides):
        return None  # -m, --cfg, --config-name ...: Hydra's own handling
    return overrides


def help_page(config_name: str, overrides: list[str]) -> str:
    """Hydra's ``--help`` page of the primary config ``config_name`` with ``overrides``."""
    with initialize_config_module(CONFIG_MODULE, version_base="1.3"):
        cfg = compose(config_name, overrides=overrides, return_hydra_config=True)
    job = OmegaConf.masked_copy(cfg, [key for key in cfg if key != "hydra"])
    template = string.Template(cfg.hydra.help.template)
    return template.safe_substitute(
        APP_CONFIG_GROUPS=app_config_groups(), CONFIG=OmegaConf.to_yaml(job)
    )


def app_config_groups() -> str:
    """The app's config groups and their options, one ``group: a, b`` line each, sorted
    (Hydra's compact format); Hydra's own groups (``hydra/...``) are not listed."""
    root = resources.files(CONFIG_MODULE)
    lines = []
    for group in sorted(entry.name for entry in root.iterdir() if entry.is_dir()):
        options = sorted(
            entry.name.removesuffix(".yaml")
            for entry in root.joinpath(group).iterdir()
            if entry.name.endswith(".yaml")
        )
        if group != "hydra" and options:
            lines.append(f"{group}: {', '.join(options)}\n")
    return "".join(lines)
