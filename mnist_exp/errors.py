"""Turn Hydra's and OmegaConf's multi-line composition errors into one line for the user."""

from __future__ import annotations

from hydra.errors import MissingConfigException, OverrideParseException
from omegaconf import DictConfig
from omegaconf.errors import OmegaConfBaseException


def describe_hydra_error(error: Exception) -> str:
    """One line naming the key, override or config group at fault and what is allowed."""
    if isinstance(error, MissingConfigException) and error.options is not None:
        group, _, option = (error.missing_cfg_file or "").rpartition("/")
        return f"{group}={option}: no such option; available: {', '.join(sorted(error.options))}"
    if isinstance(error, OverrideParseException):
        return f"cannot parse override {error.override!r}: {error.message.splitlines()[0]}"
    cause = error.__cause__ if isinstance(error.__cause__, OmegaConfBaseException) else error
    full_key = getattr(cause, "full_key", None)
    parent = getattr(cause, "parent_node", None)
    if full_key and isinstance(parent, DictConfig) and "not in struct" in str(cause):
        allowed = ", ".join(str(key) for key in parent)
        return f"{full_key}: unknown key; allowed keys here: {allowed}"
    return str(error).splitlines()[0]
