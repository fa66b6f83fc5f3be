"""The package's layers: a module imports only from its own layer or the layers below it.

The order (lowest first) is the one docs/architecture.md draws. Any import counts, also one
inside a function: a lazy import of a higher layer is still a dependency on it.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "mnist_exp"
# Lowest first. Top-level modules not named here are the command shims (python -m
# mnist_exp.run and friends), which sit above cli/.
LAYERS = (
    ("__init__", "errors", "interrupts", "job_clock", "quiet"),
    ("config",),
    ("data",),
    ("training",),
    ("results",),
    ("tracking",),
    ("pipeline",),
    ("cli",),
)
SHIMS = len(LAYERS)


def _layer(module: str) -> int:
    """The layer of ``mnist_exp.<first>...``, by its first component below the package."""
    first = module.split(".")[1] if "." in module else "__init__"
    if not (PACKAGE / first).is_dir() and not (PACKAGE / f"{first}.py").exists():
        first = "__init__"  # a name defined in mnist_exp/__init__.py, such as STARTED_AT
    for level, names in enumerate(LAYERS):
        if first in names:
            return level
    return SHIMS


def _module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imported(tree: ast.AST, module: str, is_package: bool) -> set[str]:
    """Every ``mnist_exp`` module that ``module`` imports, relative imports resolved."""
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names if alias.name.startswith("mnist_exp")}
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = module.split(".")
                base = base[: len(base) - node.level + (1 if is_package else 0)]
                target = ".".join([*base, node.module] if node.module else base)
            else:
                target = node.module or ""
            if target == "mnist_exp":  # from mnist_exp import x: x is a module or a name
                found |= {f"mnist_exp.{alias.name}" for alias in node.names}
            elif target.startswith("mnist_exp"):
                found.add(target)
    return found


# What the package itself exports to notebooks, imported lazily by the module __getattr__ of
# mnist_exp/__init__.py: the one place allowed to reach up, as the package's public face.
PUBLIC_API = {"mnist_exp.tracking.run_table"}


def _violations() -> list[str]:
    violations = []
    for path in sorted(PACKAGE.rglob("*.py")):
        module = _module_name(path)
        level = _layer(module)
        tree = ast.parse(path.read_text(), filename=str(path))
        for imported in sorted(_imported(tree, module, path.name == "__init__.py")):
            if module == "mnist_exp" and imported in PUBLIC_API:
                continue
            if imported != "mnist_exp" and _layer(imported) > level:
                violations.append(f"{module} (layer {level}) imports {imported}")
    return violations


def test_no_module_imports_a_higher_layer():
    assert _violations() == []


def test_every_subpackage_has_a_layer():
    subpackages = {path.parent.name for path in PACKAGE.glob("*/__init__.py")}
    placed = {name for names in LAYERS for name in names}
    assert subpackages - placed == set(), "add the new subpackage to LAYERS (and the docs)"


@pytest.mark.parametrize(
    ("source", "module", "expected"),
    [
        (
            "from mnist_exp.tracking.store import x",
            "mnist_exp.data.sources",
            "mnist_exp.tracking.store",
        ),
        ("from ..pipeline import one_run", "mnist_exp.training.fit", "mnist_exp.pipeline"),
        ("def f():\n    import mnist_exp.cli.run", "mnist_exp.config.schema", "mnist_exp.cli.run"),
    ],
)
def test_the_check_sees_every_import_form(source, module, expected):
    """The check would catch an upward import however it is written."""
    imported = _imported(ast.parse(source), module, is_package=False)
    assert expected in imported
    assert _layer(expected) > _layer(module)
