"""What every Hydra command of this project does around its task function.

Config mistakes become one line on stderr with exit code 2 (no traceback), Ctrl-C and
SIGTERM exit 130 after the MLflow run is marked KILLED, and ``cleanup(status)`` runs last.
"""

from __future__ import annotations

import logging.config
import os
import sys
import traceback
from collections.abc import Callable

from hydra.errors import HydraException
from omegaconf.errors import OmegaConfBaseException

from mnist_exp import interrupts
from mnist_exp.cli.help import help_overrides, help_page
from mnist_exp.config import targets
from mnist_exp.config.schema import ConfigError
from mnist_exp.errors import EXIT_INTERRUPTED, describe_hydra_error, exit_with_error


def run_hydra_command(
    hydra_main: Callable[[], object],
    cleanup: Callable[[str], None] | None = None,
    config_name: str | None = None,
) -> None:
    """Call a ``@hydra.main`` function with this project's error and interrupt handling.

    ``cleanup`` gets "KILLED" after an interrupt and "FAILED" otherwise; it should only
    act on what the command left unfinished. Given its primary ``config_name``, a plain
    ``--help`` prints Hydra's page faster (:mod:`mnist_exp.cli.help`).
    """
    targets.install()  # refuse configs that name code outside the allow-lists (targets.py)
    # Let Hydra's errors reach us instead of being printed as multi-line reports.
    os.environ["HYDRA_FULL_ERROR"] = "1"
    interrupts.install()
    status = "FAILED"
    try:
        overrides = help_overrides(sys.argv[1:]) if config_name else None
        if overrides is None:
            hydra_main()
        else:
            print(help_page(config_name, overrides))
    except (HydraException, OmegaConfBaseException) as error:
        exit_with_error(describe_hydra_error(error))
    except ConfigError as error:
        exit_with_error(str(error))
    except ValueError as error:
        if _last_frame(error) == logging.config.__file__:  # dictConfig refused Hydra's logging
            cause = f": {error.__cause__}" if error.__cause__ else ""
            exit_with_error(
                f"cannot apply hydra.job_logging or hydra.hydra_logging: {error}{cause}"
            )
        if not _raised_inside(error, "hydra"):
            raise  # a bug of ours: keep the traceback
        overrides = " ".join(arg for arg in sys.argv[1:] if not arg.startswith("-"))
        exit_with_error(f"cannot apply the overrides ({overrides}): {error}")
    except ConnectionError as error:
        if not _raised_inside(error, "ray"):
            raise
        exit_with_error(f"cannot connect: {error}")  # a Ray cluster the launcher cannot reach
    except KeyboardInterrupt as interrupt:
        status = "KILLED"
        hint = getattr(interrupt, "hint", "the MLflow run (if any) was marked KILLED")
        print(f"interrupted: {hint}", file=sys.stderr)
        sys.exit(EXIT_INTERRUPTED)
    finally:
        if cleanup is not None:
            cleanup(status)


def _raised_inside(error: BaseException, package: str) -> bool:
    """Whether ``error`` was raised by ``package``'s own code (such as Hydra composing the
    overrides, or Ray connecting), not by a task."""
    return f"{os.sep}{package}{os.sep}" in _last_frame(error)


def _last_frame(error: BaseException) -> str:
    """The file of the code that raised ``error`` ("" if unknown)."""
    frames = traceback.extract_tb(error.__traceback__)
    return frames[-1].filename if frames else ""
