"""Checks that must pass before any heavy work starts."""

from __future__ import annotations

import re
import urllib.error
import urllib.request

from omegaconf import DictConfig

from mnist_exp.config.schema import ConfigError
from mnist_exp.tracking.store import SQLITE, check_sqlite_file

SERVER_TIMEOUT = 5.0  # seconds: MLflow's own client would retry for minutes
DATABASES = ("postgresql", "mysql", "mssql")  # SQLAlchemy dialects MLflow's SQL store takes
# How to install the driver SQLAlchemy's default for each dialect needs.
DRIVER_HINTS = {
    "psycopg": "pip install 'psycopg[binary]', or write postgresql+psycopg2:// (the "
    "cluster extra installs psycopg2)",
    "psycopg2": "pip install psycopg2-binary",
    "MySQLdb": "pip install mysqlclient",
}
SQLITE_HINT = "use sqlite:///outputs/mlflow.db (three slashes, then the database file's path)"


def shown_uri(uri: str) -> str:
    """``uri`` with any password masked, fit for messages."""
    return re.sub(r"(://[^/:@]*:)[^/@]*@", r"\1***@", uri)


def check_store(uri: str) -> None:
    """Refuse a tracking URI that cannot keep runs, in one line naming it, before anything
    is trained: an empty URI, ``sqlite://`` without a file (an in-memory store that loses
    every run), MLflow's removed file store, an unknown scheme, a database whose driver is
    missing, a file that is not a SQLite database, or a server that does not answer."""
    if uri.strip().lower() == "databricks":
        return  # Databricks' hosted MLflow, as MLflow names it: its credentials are its own
    scheme = uri.partition(":")[0].partition("+")[0].lower() if ":" in uri else ""
    if not uri.strip():
        raise ConfigError(f"tracking.uri is empty; {SQLITE_HINT}, or http://HOST:PORT")
    if scheme == "sqlite":
        path = uri.removeprefix(SQLITE) if uri.startswith(SQLITE) else ""
        if path in ("", ":memory:") or path.startswith("file:"):
            raise ConfigError(
                f"tracking.uri={uri}: no database file (an in-memory store loses every run); "
                f"{SQLITE_HINT}"
            )
        check_sqlite_file(uri)
    elif scheme in ("", "file") or len(scheme) == 1:  # a bare path, file:, or C:\...
        raise ConfigError(
            f"tracking.uri={uri}: MLflow's file store is not supported (it fails since "
            f"MLflow 3.13); {SQLITE_HINT}"
        )
    elif scheme in ("http", "https"):
        check_tracking_server(uri)
    elif scheme in DATABASES:
        _check_database_driver(uri)
    elif not scheme.startswith("databricks"):
        raise ConfigError(
            f"tracking.uri={shown_uri(uri)}: unsupported scheme '{scheme}'; use "
            f"sqlite:///<file>, http(s)://HOST:PORT or a {'/'.join(DATABASES)} URI"
        )


def _check_database_driver(uri: str) -> None:
    """Make sure SQLAlchemy can import the database driver a URI asks for."""
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import ArgumentError, NoSuchModuleError

    try:
        dialect = make_url(uri).get_dialect()
        dialect.import_dbapi()
    except (ArgumentError, NoSuchModuleError) as error:
        raise ConfigError(f"tracking.uri={shown_uri(uri)}: {error}") from None
    except ImportError as error:
        missing = getattr(error, "name", None) or str(error)
        hint = DRIVER_HINTS.get(missing, f"pip install {missing}")
        raise ConfigError(
            f"tracking.uri={shown_uri(uri)}: the database driver '{missing}' is not "
            f"installed ({hint})"
        ) from None


def check_tracking_server(uri: str, timeout: float = SERVER_TIMEOUT) -> None:
    """For an ``http(s)://`` tracking URI, make sure the MLflow server answers its health
    check; raise :class:`ConfigError` naming the URI if it does not. Other URIs pass."""
    if not uri.startswith(("http://", "https://")):
        return
    try:
        with urllib.request.urlopen(f"{uri.rstrip('/')}/health", timeout=timeout) as reply:
            if reply.status == 200:
                return
            problem = f"HTTP {reply.status}"
    except urllib.error.HTTPError as error:
        problem = f"HTTP {error.code}"
    except OSError as error:
        problem = str(getattr(error, "reason", error))
    raise ConfigError(f"tracking.uri={uri}: the MLflow server does not answer ({problem})")


BYTES_PER_PARAMETER = 16  # float32 weights, gradients and two optimizer moments (Adam)


def estimated_parameters(model_cfg: DictConfig, input_dim: int, num_classes: int) -> int:
    """The parameter count of the model ``model_cfg`` describes, by arithmetic alone
    (batch-norm statistics aside), so a model too large to build is refused before Keras
    tries to allocate it."""
    count, width = 0, input_dim
    if model_cfg.type == "cnn":
        side, channels = int(input_dim**0.5), 1
        for filters in model_cfg.conv_filters:
            for _ in range(model_cfg.conv_per_block):
                count += model_cfg.kernel_size**2 * channels * filters + filters
                channels = filters
            side //= 2
        width = side * side * channels
    for units in [*model_cfg.hidden_units, num_classes]:
        count += width * units + units
        width = units
    return count


def available_memory() -> int | None:
    """Bytes of memory available to a new allocation (Linux: MemAvailable), if known."""
    try:
        with open("/proc/meminfo") as meminfo:
            for line in meminfo:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None


def check_model_fits(model_cfg: DictConfig, num_classes: int, input_dim: int = 784) -> None:
    """Refuse, naming the model keys, a model whose training state cannot fit in memory."""
    parameters = estimated_parameters(model_cfg, input_dim, num_classes)
    needed, available = parameters * BYTES_PER_PARAMETER, available_memory()
    if available is not None and needed > available:
        keys = f"model.hidden_units={list(model_cfg.hidden_units)}"
        if model_cfg.type == "cnn":
            keys += f", model.conv_filters={list(model_cfg.conv_filters)}"
        raise ConfigError(
            f"{keys}: about {parameters:,} "
            f"parameters need {needed / 2**30:.1f} GiB to train (weights, gradients, "
            f"optimizer state), more than the {available / 2**30:.1f} GiB of memory available; "
            "use fewer or narrower layers"
        )
