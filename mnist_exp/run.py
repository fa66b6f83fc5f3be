"""Command-line entry point: ``python -m mnist_exp.run [overrides]`` (``-m`` for sweeps).

Thin on purpose: Hydra composes the config, :func:`mnist_exp.config.validate` checks it,
and :func:`mnist_exp.experiment.run_experiment` does the work. TensorFlow and MLflow are
imported only once a run really starts, so ``--help`` and ``--cfg job`` answer at once.
"""

from __future__ import annotations

import os
import signal
import sys
from typing import NoReturn

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.errors import HydraException
from hydra.types import RunMode
from omegaconf import DictConfig
from omegaconf.errors import OmegaConfBaseException

from mnist_exp.config import ConfigError, validate
from mnist_exp.data import load_splits
from mnist_exp.errors import describe_hydra_error

EXIT_BAD_CONFIG = 2
EXIT_INTERRUPTED = 130


@hydra.main(version_base="1.3", config_path="pkg://mnist_exp.conf", config_name="config")
def task(cfg: DictConfig) -> float:
    """Hydra's task function: validate the composed config, run it, return the objective.

    A config or data error ends the process here with one line and exit code 2 (in a
    sweep too: a bad value must not cost the jobs after it).
    """
    try:
        return _run(cfg)
    except ConfigError as error:
        _fail(str(error))


def _run(cfg: DictConfig) -> float:
    typed = validate(cfg)
    splits = load_splits(typed.data, typed.train.validation_split, typed.seed)
    # TensorFlow and MLflow load only now that config and data are known to be good.
    from mnist_exp.experiment import JobInfo, run_experiment

    hydra_cfg = HydraConfig.get()
    multirun = hydra_cfg.mode == RunMode.MULTIRUN
    job = JobInfo(
        overrides=list(hydra_cfg.overrides.task),
        sweep=hydra_cfg.sweep.dir if multirun else None,
        job_num=hydra_cfg.job.num if multirun else None,
        output_dir=hydra_cfg.runtime.output_dir,
    )
    return run_experiment(typed, splits, job)


def _terminate(signum: int, frame: object) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


def main() -> None:
    """Run the CLI, turning config mistakes into one-line errors with exit code 2."""
    # Let Hydra's errors reach us instead of being printed as multi-line reports.
    os.environ["HYDRA_FULL_ERROR"] = "1"
    signal.signal(signal.SIGTERM, _terminate)
    try:
        task()
    except (HydraException, OmegaConfBaseException) as error:
        _fail(describe_hydra_error(error))
    except KeyboardInterrupt:
        print("interrupted: the MLflow run (if any) was marked KILLED", file=sys.stderr)
        sys.exit(EXIT_INTERRUPTED)


def _fail(message: str) -> NoReturn:
    print(f"error: {message}", file=sys.stderr)
    sys.exit(EXIT_BAD_CONFIG)


if __name__ == "__main__":
    main()
