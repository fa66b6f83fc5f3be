"""``hydra/sweeper=optuna``: mnist-exp's Hydra sweeper on Optuna 4+ (persistent studies).

Hydra finds it by scanning the ``hydra_plugins`` namespace package, so this module is
imported by every command: it only declares the config and hands the work to
:mod:`mnist_exp.pipeline.search`, imported (with Optuna) once a sweep really starts.
"""

# No ``from __future__ import annotations``: Hydra's plugin scan runs this module before it
# is in sys.modules, where dataclasses would look string annotations up.
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from hydra.core.config_store import ConfigStore
from hydra.core.plugins import Plugins
from hydra.plugins.sweeper import Sweeper
from hydra.types import HydraContext, TaskFunction
from omegaconf import DictConfig

if TYPE_CHECKING:
    from mnist_exp.pipeline.search import Search

TARGET = "hydra_plugins.mnist_exp_optuna.optuna_sweeper.OptunaSweeper"


@dataclass
class OptunaSweeperConf:
    """``hydra.sweeper`` for ``hydra/sweeper=optuna`` (docs/sweeps.md)."""

    _target_: str = TARGET
    # key: search space, as in hydra-optuna-sweeper: interval(a, b) (floats), int(interval(a, b))
    # (integers), either in tag(log, ...), range(a, b[, step]) (b excluded, as in Hydra's grid
    # sweeps), choice(...) or a,b,c; any other value is fixed for every trial. Every value
    # the space can give is checked against the schema before any run.
    params: dict[str, str] | None = None
    n_trials: int = 20  # in the whole study: finished or running trials count
    n_jobs: int = 1  # trials asked for and launched together
    direction: str = "maximize"  # the task returns validation accuracy
    sampler: str = "tpe"  # tpe, random or qmc
    pruner: str = "median"  # median, hyperband or none: stops trials behind after an epoch
    seed: int | None = None
    study_name: str | None = None  # None: named after the search, so a re-run continues it
    storage: str | None = None  # None: optuna.db beside a SQLite MLflow store; or an RDB URL
    max_failure_rate: float = 1.0  # the share of failed trials that ends the sweep (exit 1)


ConfigStore.instance().store(
    group="hydra/sweeper", name="optuna", node=OptunaSweeperConf, provider="mnist_exp"
)


class OptunaSweeper(Sweeper):
    """A Hydra sweeper whose jobs are the trials of a (persistent) Optuna study."""

    def __init__(self, **settings: Any) -> None:
        self.settings = settings
        self.search: Search | None = None
        self.launcher: Any = None

    def setup(
        self, *, hydra_context: HydraContext, task_function: TaskFunction, config: DictConfig
    ) -> None:
        """Check the settings and open the study (a mistake: ConfigError, before any run),
        then instantiate the configured launcher."""
        from mnist_exp.pipeline.search import SearchSettings, prepare_search

        self.search = prepare_search(SearchSettings.of(self.settings), config)
        self.search.pass_study_to_jobs(config)
        self.launcher = Plugins.instance().instantiate_launcher(
            config=config, hydra_context=hydra_context, task_function=task_function
        )

    def sweep(self, arguments: list[str]) -> None:
        """Run the study's missing trials (``arguments`` were read in :meth:`setup`)."""
        assert self.search is not None, "setup() first"
        self.search.run(self.launcher)
