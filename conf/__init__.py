"""Hydra configs, shipped inside the package as ``mnist_exp.conf`` (see pyproject.toml)."""
