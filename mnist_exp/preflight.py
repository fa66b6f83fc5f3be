"""Checks that must pass before any heavy work starts."""

from __future__ import annotations

import urllib.error
import urllib.request

from mnist_exp.config import ConfigError

SERVER_TIMEOUT = 5.0  # seconds: MLflow's own client would retry for minutes


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
