"""Configs may name only the Python objects this project ships or uses: refuse the rest.

Hydra imports and calls every ``_target_`` under ``hydra.callbacks``, ``hydra.launcher``
and ``hydra.sweeper`` (nested ones too) before the task runs, and hands
``hydra.job_logging`` / ``hydra.hydra_logging`` to :func:`logging.config.dictConfig`, which
imports any handler or formatter ``class``, calls any ``()`` factory and imports any
``ext://`` value. So one override, a shared preset or a ``--config-dir`` could open, copy or
delete files. :func:`check_targets` refuses, with one line naming the key and what is
allowed, every such name outside the allow-lists below. :func:`install` makes Hydra run it
on every config it composes (the command's, each sweep job's, the compose API's), right
after composition: before logging is configured and before anything is instantiated.
"""

from __future__ import annotations

import functools
import logging
import logging.handlers
import re
from collections.abc import Iterator
from typing import Any, NoReturn

import hydra._internal.hydra as hydra_module
from hydra._internal.config_loader_impl import ConfigLoaderImpl
from omegaconf import Container, DictConfig, ListConfig

from mnist_exp.config.schema import ConfigError

SWEEP_CALLBACK = "mnist_exp.pipeline.sweep.SweepCallback"
LAUNCHERS = frozenset(
    {
        "hydra._internal.core_plugins.basic_launcher.BasicLauncher",
        "hydra_plugins.hydra_joblib_launcher.joblib_launcher.JoblibLauncher",
        "hydra_plugins.hydra_ray_launcher.ray_launcher.RayLauncher",  # hydra/launcher=cluster
    }
)
SWEEPERS = frozenset(
    {
        "hydra._internal.core_plugins.basic_sweeper.BasicSweeper",
        # hydra/sweeper=optuna: this project's plugin (its sampler is a name, not a _target_)
        "hydra_plugins.mnist_exp_optuna.optuna_sweeper.OptunaSweeper",
    }
)
# Where a ``_target_`` may appear (the node holding it; * stands for any key) and what it
# may name there. Anywhere else, task config included, none is allowed.
ALLOWED_TARGETS: dict[tuple[str, ...], frozenset[str]] = {
    ("hydra", "callbacks", "*"): frozenset({SWEEP_CALLBACK}),
    ("hydra", "launcher"): LAUNCHERS,
    ("hydra", "sweeper"): SWEEPERS,
}
TARGET_PLACES = "hydra.callbacks.<name>, hydra.launcher, hydra.sweeper"
LOGGING_CONFIGS = frozenset({"job_logging", "hydra_logging"})
LOGGING_STREAMS = frozenset({"ext://sys.stdout", "ext://sys.stderr"})
# A Ray runtime_env may set variables and the project's worker setup hook; its other keys
# (pip, conda, py_modules, working_dir, ...) install or ship code to the workers.
RUNTIME_ENV_KEYS = frozenset({"config", "env_vars", "worker_process_setup_hook"})
RAY_SETUP_HOOK = "mnist_exp.pipeline.cluster.enter_launch_dir"
# ``${resolver:...}`` alone as a value: it may produce a whole node (oc.create, oc.decode).
_RESOLVER_ALONE = re.compile(r"^\$\{\s*[\w.]+\s*:.*\}$", re.DOTALL)


class _Unresolved(str):
    """An interpolation that cannot be resolved yet (its raw text): a Hydra runtime value
    such as ``${hydra.runtime.output_dir}``, or a value that is refused where it matters."""


def check_targets(cfg: DictConfig) -> None:
    """Raise :class:`ConfigError` for the first name in ``cfg`` that Hydra or logging would
    import outside the allow-lists: a ``_target_`` (anywhere), a ``hydra.callbacks`` entry,
    a logging handler or formatter ``class``, a ``()`` factory, an ``ext://`` value or a log
    file not named ``*.log`` in ``hydra.job_logging`` / ``hydra.hydra_logging``, or a Ray
    ``runtime_env`` key. Interpolations are
    checked as they resolve now."""
    _walk(cfg, (), set())


class CheckingConfigLoader(ConfigLoaderImpl):
    """Hydra's config loader, with :func:`check_targets` run on every config it composes.

    Every composition goes through ``load_configuration``: the command's
    (``Hydra.compose_config``, for runs, sweeps, ``--cfg``, ``--help`` and ``--info``), each
    sweep job's (``load_sweep_config``) and the compose API's. Being a class of this module,
    it pickles by reference: a launcher's worker process that gets the loader (joblib's
    composes each job's config itself) imports this module and checks too.
    """

    def load_configuration(self, *args: Any, **kwargs: Any) -> DictConfig:
        """Compose as Hydra does, then refuse what :func:`check_targets` refuses."""
        cfg = super().load_configuration(*args, **kwargs)
        check_targets(cfg)
        return cfg


def install() -> None:
    """Make every Hydra instance created from now on (one per command) load its configs
    with :class:`CheckingConfigLoader`, so that a refused name ends the command with
    :class:`ConfigError` before Hydra configures logging or instantiates callbacks,
    sweeper or launcher. Idempotent."""
    hydra_module.ConfigLoaderImpl = CheckingConfigLoader  # type: ignore[misc]


def _walk(node: Container, path: tuple[str, ...], walking: set[int]) -> None:
    walking.add(id(node))
    try:
        for key, value in _items(node):
            here = (*path, key)
            _check(here, value)
            if isinstance(value, Container) and id(value) not in walking:
                _walk(value, here, walking)
    finally:
        walking.discard(id(node))


def _items(node: Container) -> Iterator[tuple[str, Any]]:
    """(key, value) of each child; ``[i]`` for list items. Containers stay containers,
    interpolations are resolved (an :class:`_Unresolved` where they cannot be yet)."""
    if isinstance(node, DictConfig):
        if node._is_none() or node._is_missing() or node._is_interpolation():
            return
        keys: list[Any] = list(node.keys())
    elif isinstance(node, ListConfig):
        if node._is_none() or node._is_missing() or node._is_interpolation():
            return
        keys = list(range(len(node)))
    else:
        return
    for key in keys:
        child = node._get_node(key)
        name = f"[{key}]" if isinstance(node, ListConfig) else str(key)
        if child is None:
            continue
        if child._is_interpolation():
            try:
                value = node[key]
            except Exception:  # resolvers may raise anything; so may a missing value
                value = _Unresolved(child._value())
        elif isinstance(child, Container):
            value = None if child._is_none() else child
        else:
            value = child._value()
        yield name, value


def _check(path: tuple[str, ...], value: Any) -> None:
    """Refuse ``value`` at ``path`` if it names Python code outside the allow-lists."""
    key = path[-1]
    if key == "_target_":
        allowed = _allowed_targets(path[:-1])
        if isinstance(value, _Unresolved) or value not in allowed:
            _refuse(path, value, _targets_text(allowed))
    is_callback = path[:2] == ("hydra", "callbacks") and len(path) == 3
    if is_callback and not (isinstance(value, DictConfig) and "_target_" in value):
        raise ConfigError(
            f"{_dotted(path)}: not allowed (a callback needs a _target_); "
            f"allowed targets: {SWEEP_CALLBACK}"
        )
    if path[:1] == ("hydra",) and len(path) >= 2 and path[1] in LOGGING_CONFIGS:
        _check_logging(path, value)
    if path[:2] == ("hydra", "launcher") and len(path) >= 2 and path[-2:-1] == ("runtime_env",):
        if key not in RUNTIME_ENV_KEYS:
            _refuse(path, value, f"allowed keys here: {', '.join(sorted(RUNTIME_ENV_KEYS))}")
        if key == "worker_process_setup_hook" and value not in (None, RAY_SETUP_HOOK):
            _refuse(path, value, f"allowed: {RAY_SETUP_HOOK}")
    if (
        isinstance(value, _Unresolved)
        and _RESOLVER_ALONE.match(value)
        and path[:1] == ("hydra",)
        and len(path) >= 2
        and path[1] in {"callbacks", "launcher", "sweeper", *LOGGING_CONFIGS}
    ):
        # Hydra or logging would resolve it later, into what this check cannot see.
        _refuse(path, value, "a resolver here must resolve when the config is composed")


def _check_logging(path: tuple[str, ...], value: Any) -> None:
    """The parts of a :func:`logging.config.dictConfig` config that import code or could
    write code into a file."""
    key = path[-1]
    if key == "()":
        _refuse(path, value, f"no () factories in logging configs; {_classes_text(path)}")
    if key == "class":
        allowed = _logging_classes(path)
        if isinstance(value, _Unresolved) or value not in allowed:
            _refuse(path, value, _classes_text(path))
    if isinstance(value, str) and value.startswith("ext://") and value not in LOGGING_STREAMS:
        _refuse(path, value, f"allowed ext:// values: {', '.join(sorted(LOGGING_STREAMS))}")
    # A file handler appends formatted records, whose format the config also sets, to its
    # file: named freely, that file could be ~/.bashrc or a .pth file that Python runs.
    is_log_file = len(path) == 5 and path[2] == "handlers" and key == "filename"
    if is_log_file and not (isinstance(value, str) and value.endswith(".log")):
        _refuse(path, value, "allowed: a file name ending in .log")


def _allowed_targets(holder: tuple[str, ...]) -> frozenset[str]:
    for place, allowed in ALLOWED_TARGETS.items():
        if len(place) != len(holder):
            continue
        if all(part in ("*", key) for part, key in zip(place, holder, strict=True)):
            return allowed
    return frozenset()


def _targets_text(allowed: frozenset[str]) -> str:
    if allowed:
        return f"allowed targets: {', '.join(sorted(allowed))}"
    return f"allowed targets: none here (only under {TARGET_PLACES})"


@functools.cache
def _subclasses(base: type) -> frozenset[str]:
    """``module.Name`` of every public class of ``logging`` and ``logging.handlers``
    defined there that subclasses ``base``, less QueueHandler (whose ``queue`` and
    ``listener`` keys dictConfig resolves as import paths from Python 3.12)."""
    found = set()
    for module in (logging, logging.handlers):
        for name, obj in vars(module).items():
            if (
                isinstance(obj, type)
                and issubclass(obj, base)
                and obj.__module__ == module.__name__
                and not name.startswith("_")
                and name != "QueueHandler"
            ):
                found.add(f"{module.__name__}.{name}")
    return frozenset(found)


def _logging_classes(path: tuple[str, ...]) -> frozenset[str]:
    """What a ``class`` may name at ``path``: a Handler under ``handlers.<name>``, a
    Formatter under ``formatters.<name>``, nothing elsewhere."""
    if len(path) == 5 and path[2] == "handlers":
        return _subclasses(logging.Handler)
    if len(path) == 5 and path[2] == "formatters":
        return _subclasses(logging.Formatter)
    return frozenset()


def _classes_text(path: tuple[str, ...]) -> str:
    allowed = _logging_classes(path)
    if not allowed:
        return "allowed: a class only in handlers.<name> and formatters.<name>"
    return f"allowed classes: {', '.join(sorted(allowed))}"


def _dotted(path: tuple[str, ...]) -> str:
    """``hydra.callbacks.x._args_[0]`` from its parts."""
    text = path[0] if path else ""
    for part in path[1:]:
        text += part if part.startswith("[") else f".{part}"
    return text


def _refuse(path: tuple[str, ...], value: Any, allowed: str) -> NoReturn:
    shown = "null" if value is None else value
    raise ConfigError(f"{_dotted(path)}={shown}: not allowed; {allowed}")
