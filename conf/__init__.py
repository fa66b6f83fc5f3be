"""Hydra configs, shipped inside the package as ``mnist_exp.conf`` (see pyproject.toml).

Hydra imports this package to read the YAML files, so this is where the schema bases they
extend (``/schema_*`` in their defaults lists) are registered: see mnist_exp/config/store.py.
"""

from mnist_exp.config.store import register

register()
