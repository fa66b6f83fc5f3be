"""Configs may name only the Python objects, environment variables and log files this
project ships or uses: refuse the rest.

Hydra imports and calls every ``_target_`` under ``hydra.callbacks``, ``hydra.launcher``
and ``hydra.sweeper`` (nested ones too) before the task runs, and hands
``hydra.job_logging`` / ``hydra.hydra_logging`` to :func:`logging.config.dictConfig`, which
imports any handler or formatter ``class``, calls any ``()`` factory, imports any
``ext://`` value, sets any ``.`` attribute on a handler and opens any file a handler names,
in any mode. ``hydra.job.env_set`` and a Ray launcher's ``runtime_env.env_vars`` go into
the environment of the job and of every process it starts, where ``LD_PRELOAD`` or
``PYTHONPATH`` load code. So one override, a shared preset or a ``--config-dir`` could run
code, open, copy, truncate or delete files, or send log records off the machine.
:func:`check_targets` refuses, with one line naming the key and what is allowed, every such
name outside the allow-lists below. :func:`install` makes Hydra run it on every config it
composes (the command's, each sweep job's, the compose API's), right after composition:
before logging is configured and before anything is instantiated. A config file that is
not valid YAML is reported there too, in one line naming the file.
"""

from __future__ import annotations

import copy
import os
import re
from collections.abc import Iterator
from typing import Any, NoReturn

import hydra._internal.hydra as hydra_module
import yaml
from hydra._internal.config_loader_impl import ConfigLoaderImpl
from omegaconf import Container, DictConfig, ListConfig, OmegaConf, open_dict, read_write
from omegaconf.errors import OmegaConfBaseException

from mnist_exp.config.schema import ConfigError
from mnist_exp.errors import describe_yaml_error

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
# The handlers a logging config may build, each with the keyword arguments it may pass it
# besides HANDLER_KEYS, which dictConfig reads itself. None sends records off the machine,
# rotates (renames, deletes) files or has attributes set (dictConfig's "." key).
HANDLER_KEYS = frozenset({"class", "filters", "formatter", "level"})
HANDLERS: dict[str, frozenset[str]] = {
    "logging.StreamHandler": frozenset({"stream"}),
    "logging.FileHandler": frozenset({"filename", "mode", "encoding", "delay", "errors"}),
    "logging.NullHandler": frozenset(),
}
FILE_HANDLER = "logging.FileHandler"
FORMATTERS = frozenset({"logging.Formatter"})
# A log file is only appended to, and only in the run's (or sweep job's) folder, as Hydra's
# default job_logging writes ${hydra.runtime.output_dir}/${hydra.job.name}.log.
LOG_DIR = "${hydra.runtime.output_dir}"
LOG_FILE_TEXT = f"allowed: {LOG_DIR}/<name>.log (a file in the run's folder)"
# Stands for the run's folder, which Hydra sets only when the job starts, while a log file
# is checked. No file can have this path (NUL), so a log file named so literally opens none.
_OUTPUT_DIR = "\0output_dir"
# The environment variables a config may set (hydra.job.env_set, a Ray runtime_env's
# env_vars): this project's own (the sweep callback's, the Optuna sweeper's, the Ray
# launch folder) and a few that only pick devices, thread counts, log levels, GPU memory or
# the tracking URI. Not XLA_FLAGS (--xla_gpu_cuda_data_dir runs ptxas from a folder it
# names, --xla_dump_to writes anywhere), nor KERAS_BACKEND or JAX_PLATFORMS (train.backend
# and train.device set those).
PROJECT_ENV = re.compile(r"MNIST_EXP_[A-Z0-9_]+")
ENV_KEYS = frozenset(
    {
        "CUDA_VISIBLE_DEVICES",
        "MKL_NUM_THREADS",
        "MLFLOW_TRACKING_URI",  # hydra/launcher=cluster: where the Ray workers log
        "OMP_NUM_THREADS",
        "OPENBLAS_NUM_THREADS",
        "TF_CPP_MAX_VLOG_LEVEL",
        "TF_CPP_MIN_LOG_LEVEL",
        "XLA_PYTHON_CLIENT_MEM_FRACTION",
        "XLA_PYTHON_CLIENT_PREALLOCATE",
    }
)
# Loader and interpreter variables load code: never allowed, whatever the lists above say.
NEVER_ENV = re.compile(r"LD_|DYLD_|PYTHON|PATH$", re.IGNORECASE)
ENV_TEXT = f"allowed keys here: MNIST_EXP_*, {', '.join(sorted(ENV_KEYS))}"
UNRESOLVED_TEXT = "an interpolation here must resolve when the config is composed"
# A Ray runtime_env may set variables and the project's worker setup hook; its other keys
# (pip, conda, py_modules, working_dir, ...) install or ship code to the workers.
RUNTIME_ENV_KEYS = frozenset({"config", "env_vars", "worker_process_setup_hook"})
RAY_SETUP_HOOK = "mnist_exp.cli.cluster.enter_launch_dir"
# ``${resolver:...}`` alone as a value: it may produce a whole node (oc.create, oc.decode).
_RESOLVER_ALONE = re.compile(r"^\$\{\s*[\w.]+\s*:.*\}$", re.DOTALL)


class _Unresolved(str):
    """An interpolation that cannot be resolved yet (its raw text): a Hydra runtime value
    such as ``${hydra.runtime.output_dir}``, or a value that is refused where it matters."""


def check_targets(cfg: DictConfig) -> None:
    """Raise :class:`ConfigError` for the first name in ``cfg`` outside the allow-lists.

    That is a ``_target_`` (anywhere), a ``hydra.callbacks`` entry, a Ray ``runtime_env``
    key, an environment variable (``hydra.job.env_set``, ``runtime_env.env_vars``), and in
    ``hydra.job_logging`` / ``hydra.hydra_logging`` a handler or formatter ``class``, a
    handler's key, a ``()`` factory, an ``ext://`` value, a log file's ``mode`` other than
    ``a`` or a log file outside the run's folder. Interpolations are checked as they resolve
    now; in logging configs and environment variable sets they must resolve now (but for
    a log file's folder, ``${hydra.runtime.output_dir}``)."""
    _walk(cfg, (), set())
    if OmegaConf.select(cfg, "hydra.runtime") is not None:
        _check_log_files(cfg)


class CheckingConfigLoader(ConfigLoaderImpl):
    """Hydra's config loader, with :func:`check_targets` run on every config it composes.

    Every composition goes through ``load_configuration``: the command's
    (``Hydra.compose_config``, for runs, sweeps, ``--cfg``, ``--help`` and ``--info``), each
    sweep job's (``load_sweep_config``) and the compose API's. Being a class of this module,
    it pickles by reference: a launcher's worker process that gets the loader (joblib's
    composes each job's config itself) imports this module and checks too.
    """

    def load_configuration(self, *args: Any, **kwargs: Any) -> DictConfig:
        """Compose as Hydra does, then refuse what :func:`check_targets` refuses. A config
        file that is not valid YAML is a :class:`ConfigError` naming the file."""
        try:
            cfg = super().load_configuration(*args, **kwargs)
        except yaml.YAMLError as error:
            raise ConfigError(describe_yaml_error(error)) from error
        check_targets(cfg)
        return cfg


def install() -> None:
    """Make every Hydra instance created from now on (one per command) load its configs
    with :class:`CheckingConfigLoader`, so that a refused name ends the command with
    :class:`ConfigError` before Hydra configures logging or instantiates callbacks,
    sweeper or launcher. Idempotent.

    One of the project's two uses of another library's private API, written against
    Hydra 1.3.2-1.3.8 (pinned below 1.4 in pyproject.toml): Hydra has no public hook that
    sees each composed config, sweep jobs' included, before it configures logging and
    instantiates anything. tests/config/test_targets.py fails, naming Hydra, if a release
    moves it."""
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
    interpolations are resolved (an :class:`_Unresolved` where they cannot be yet),
    missing values (``???``) are skipped. Only OmegaConf's public API."""
    if isinstance(node, DictConfig):
        keys: list[Any] = list(node.keys())
    elif isinstance(node, ListConfig):
        keys = list(range(len(node)))
    else:
        return
    raw: Any = None  # the node's values as written, read once if an interpolation needs it
    for key in keys:
        name = f"[{key}]" if isinstance(node, ListConfig) else str(key)
        if OmegaConf.is_missing(node, key):
            continue
        if OmegaConf.is_interpolation(node, key):
            try:
                value = node[key]
            except Exception:  # resolvers may raise anything; so may a missing value
                if raw is None:
                    raw = OmegaConf.to_container(node, resolve=False)
                value = _Unresolved(raw[key])
        else:
            value = node[key]
        yield name, value


def _check(path: tuple[str, ...], value: Any) -> None:
    """Refuse ``value`` at ``path`` if it names Python code, an environment variable or
    a log file outside the allow-lists."""
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
    if _is_environment(path) and isinstance(value, _Unresolved):
        _refuse(path, value, UNRESOLVED_TEXT)  # it could become any variables later
    if _is_environment(path[:-1]) and not _allowed_env(key):
        _refuse(path, value, ENV_TEXT)
    if (
        isinstance(value, _Unresolved)
        and _RESOLVER_ALONE.match(value)
        and path[:1] == ("hydra",)
        and len(path) >= 2
        and path[1] in {"callbacks", "launcher", "sweeper"}
    ):
        # Hydra would resolve it later, into what this check cannot see.
        _refuse(path, value, "a resolver here must resolve when the config is composed")


def _is_environment(path: tuple[str, ...]) -> bool:
    """Whether ``path`` holds environment variables for a job or a Ray worker."""
    in_ray = path[:2] == ("hydra", "launcher") and path[-2:] == ("runtime_env", "env_vars")
    return path == ("hydra", "job", "env_set") or in_ray


def _allowed_env(key: str) -> bool:
    """Whether a config may set the environment variable ``key``."""
    if NEVER_ENV.match(key):
        return False
    return key in ENV_KEYS or PROJECT_ENV.fullmatch(key) is not None


def _check_logging(path: tuple[str, ...], value: Any) -> None:
    """The parts of a :func:`logging.config.dictConfig` config that import code, send
    records away or open files (the files' folder: :func:`_check_log_files`)."""
    key = path[-1]
    in_handler = len(path) == 5 and path[2] == "handlers"
    if isinstance(value, _Unresolved) and not (in_handler and key == "filename"):
        _refuse(path, value, UNRESOLVED_TEXT)  # it could become any class or file later
    if key == "()":
        _refuse(path, value, f"no () factories in logging configs; {_classes_text(path)}")
    if key == "class" and value not in _logging_classes(path):
        _refuse(path, value, _classes_text(path))
    if isinstance(value, str) and value.startswith("ext://") and value not in LOGGING_STREAMS:
        _refuse(path, value, f"allowed ext:// values: {', '.join(sorted(LOGGING_STREAMS))}")
    if len(path) == 4 and path[2] == "handlers" and isinstance(value, DictConfig):
        _check_handler(path, value)
    if in_handler and key == "mode" and value != "a":
        _refuse(path, value, "allowed: a (log files are only appended to)")


def _check_handler(path: tuple[str, ...], handler: DictConfig) -> None:
    """A handler of an allowed class gets only the keys that class takes; a FileHandler
    names its file. (A class that is not allowed, or a factory, is refused as a key.)"""
    fields = dict(_items(handler))
    handler_class = fields.get("class")
    if not isinstance(handler_class, str) or handler_class not in HANDLERS:
        if "class" in fields or "()" in fields:
            return
        raise ConfigError(
            f"{_dotted(path)}: a handler needs a class; {_classes_text((*path, 'class'))}"
        )
    allowed = HANDLER_KEYS | HANDLERS[handler_class]
    for key, value in fields.items():
        if key not in allowed:
            _refuse((*path, key), value, f"allowed keys here: {', '.join(sorted(allowed))}")
    if handler_class == FILE_HANDLER and fields.get("filename") is None:
        raise ConfigError(f"{_dotted(path)}: a {FILE_HANDLER} needs a filename; {LOG_FILE_TEXT}")


def _check_log_files(cfg: DictConfig) -> None:
    """Refuse a handler's ``filename`` unless it is a ``*.log`` file right in the run's
    folder (``${hydra.runtime.output_dir}/<name>.log``, where ``<name>``, once resolved,
    has no ``/``: ``${hydra.job.name}`` might). A file elsewhere could be ~/.bashrc, or a
    .pth file that Python runs, with records whose format the config also sets.

    Resolved on a copy of ``cfg`` whose run folder is a stand-in, as Hydra sets it only
    when the job starts; :func:`_check_logging` has refused anything else unresolved."""
    probe = copy.deepcopy(cfg)
    with read_write(probe), open_dict(probe):
        probe.hydra.runtime.output_dir = _OUTPUT_DIR
    for config in sorted(LOGGING_CONFIGS):
        handlers = OmegaConf.select(probe, f"hydra.{config}.handlers")
        if not isinstance(handlers, DictConfig):
            continue
        for name, handler in handlers.items():
            if not isinstance(handler, DictConfig) or "filename" not in handler:
                continue
            path = ("hydra", config, "handlers", str(name), "filename")
            try:
                filename = str(handler.filename)
            except OmegaConfBaseException:
                raw = OmegaConf.to_container(handler, resolve=False)["filename"]
                _refuse(path, raw, UNRESOLVED_TEXT)
            if os.path.dirname(filename) != _OUTPUT_DIR or not filename.endswith(".log"):
                _refuse(path, filename.replace(_OUTPUT_DIR, LOG_DIR), LOG_FILE_TEXT)


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


def _logging_classes(path: tuple[str, ...]) -> frozenset[str]:
    """What a ``class`` may name at ``path``: one of :data:`HANDLERS` under
    ``handlers.<name>``, a Formatter under ``formatters.<name>``, nothing elsewhere."""
    if len(path) == 5 and path[2] == "handlers":
        return frozenset(HANDLERS)
    if len(path) == 5 and path[2] == "formatters":
        return FORMATTERS
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
