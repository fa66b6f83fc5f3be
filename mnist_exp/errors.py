"""User-facing failures: one-line Hydra composition errors, and expected run failures."""

from __future__ import annotations

import re
import sys
from typing import NoReturn

import yaml
from hydra.errors import MissingConfigException, OverrideParseException
from omegaconf import DictConfig
from omegaconf.errors import OmegaConfBaseException

EXIT_RUN_FAILED = 1
EXIT_BAD_CONFIG = 2
EXIT_INTERRUPTED = 130


def exit_with_error(message: str, code: int = EXIT_BAD_CONFIG) -> NoReturn:
    """Print ``error: message`` as one line on stderr and exit with ``code``."""
    print(f"error: {message}", file=sys.stderr)
    sys.exit(code)


class RunFailed(Exception):
    """A run failed for a known reason (tagged ``failure_reason`` on the run); the CLI
    reports it in one line instead of a traceback."""

    reason = "exception"


def describe_hydra_error(error: Exception) -> str:
    """One line naming the key, override or config group at fault and what is allowed."""
    if isinstance(error, MissingConfigException) and error.options is not None:
        group, _, option = (error.missing_cfg_file or "").rpartition("/")
        return f"{group}={option}: no such option; available: {', '.join(sorted(error.options))}"
    if isinstance(error, OverrideParseException):
        return f"cannot parse override {error.override!r}: {error.message.splitlines()[0]}"
    if added := _NOT_IN_DEFAULTS.search(str(error)):
        group, override = added.groups()
        hint = f"add it with a +: {override}"
        if group == "sweep":
            hint += f" (and run it as a sweep: python -m mnist_exp.run -m {override})"
        return f"{override[1:]}: {group} is not in the default config list; {hint}"
    cause = error.__cause__ if isinstance(error.__cause__, OmegaConfBaseException) else error
    full_key = getattr(cause, "full_key", None)
    parent = getattr(cause, "parent_node", None)
    if full_key and isinstance(parent, DictConfig) and "not in struct" in str(cause):
        allowed = ", ".join(str(key) for key in parent)
        return f"{full_key}: unknown key; allowed keys here: {allowed}"
    return _one_line(str(error) or str(cause) or type(error).__name__)


def describe_yaml_error(error: yaml.YAMLError) -> str:
    """One line for a config file that is not valid YAML: where (``file:line:column``),
    what, and while reading what (``(while parsing a flow sequence at line 2, column 12)``)."""
    if not isinstance(error, yaml.MarkedYAMLError) or error.problem_mark is None:
        return f"a config file is not valid YAML: {_one_line(str(error))}"
    mark = error.problem_mark
    line = f"{mark.name}:{mark.line + 1}:{mark.column + 1}: not valid YAML: {error.problem}"
    context = error.context_mark
    if error.context and context is not None:
        line += f" ({error.context} at line {context.line + 1}, column {context.column + 1})"
    return line


# Hydra's words for ``group=option`` when the group has no default (``sweep``, for one).
_NOT_IN_DEFAULTS = re.compile(
    r"Could not override '([\w/]+)'\. No match in the defaults list\..*use (\+\S+)", re.S
)


def _one_line(message: str) -> str:
    """A one-line message unchanged; a longer one (such as Hydra's target-policy refusals)
    joined into one line, whitespace collapsed, instead of cut after its first line."""
    lines = message.splitlines()
    if len(lines) <= 1:
        return lines[0] if lines else message
    return " ".join(message.split())
