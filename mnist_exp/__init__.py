"""mnist-exp: config-driven MNIST experiments with Hydra, Keras and MLflow.

For notebooks: ``mnist_exp.load_runs(...)`` returns an experiment's runs as a pandas
DataFrame with typed config values (:func:`mnist_exp.tracking.run_table.load_runs`).
"""

import os
import secrets

from omegaconf import OmegaConf

from mnist_exp import quiet

# Quiet TensorFlow's C++ start-up chatter (must be set before TensorFlow is imported) and
# MLflow's download progress bars, which would bury this tool's one-line messages.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")

# ${uid:} in conf/: a random id, resolved once per config (Hydra copies the cache to every
# job of a sweep), so that runs and sweeps started in the same second get folders of their
# own. 48 random bits: a clash is as likely as two runs guessing the same 12 hex digits.
if not OmegaConf.has_resolver("uid"):
    OmegaConf.register_new_resolver("uid", lambda: secrets.token_hex(6), use_cache=True)


def _expose_own_hydra_plugin() -> None:
    """Let Hydra's plugin scan find ``hydra_plugins.mnist_exp_optuna`` (the Optuna sweeper)
    in an editable install too. Hydra lists ``hydra_plugins.__path__`` with pkgutil, which
    cannot list the import hook through which setuptools maps the project's folder in an
    editable install; so its folder joins that path. A wheel installs the plugin in
    site-packages, where it is listed anyway (this is then a no-op)."""
    import importlib.util

    try:
        spec = importlib.util.find_spec("hydra_plugins.mnist_exp_optuna")
    except ImportError:  # no hydra_plugins at all
        return
    if spec is None or not spec.submodule_search_locations:
        return
    import hydra_plugins

    folder = os.path.dirname(os.path.abspath(spec.submodule_search_locations[0]))
    if folder not in list(hydra_plugins.__path__):
        hydra_plugins.__path__.append(folder)


_expose_own_hydra_plugin()
quiet.install()

__all__ = ["load_runs"]


def __getattr__(name: str) -> object:
    """The package's public functions, imported on first use (MLflow and pandas load only
    then): ``mnist_exp.load_runs``."""
    if name == "load_runs":
        from mnist_exp.tracking.run_table import load_runs

        return load_runs
    raise AttributeError(f"module 'mnist_exp' has no attribute {name!r}")
