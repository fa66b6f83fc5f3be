"""``--help`` is Hydra's own page, composed faster (mnist_exp/cli/help.py): the same text,
for the training and the evaluation command, with and without overrides."""

from __future__ import annotations

import contextlib
import io
import sys

import pytest
from conftest import in_process

from mnist_exp.cli import evaluate, run
from mnist_exp.cli.help import help_overrides, help_page


def hydras_own_page(task, overrides: list[str]) -> str:
    """The page Hydra's ``--help`` prints for a ``@hydra.main`` task."""
    argv, sys.argv = sys.argv, ["mnist_exp", "--help", *overrides]
    out = io.StringIO()
    try:
        with contextlib.redirect_stdout(out), pytest.raises(SystemExit):
            task()
    finally:
        sys.argv = argv
    return out.getvalue()


@pytest.mark.parametrize(
    ("task", "config_name", "overrides"),
    [
        (run.task, "config", []),
        (run.task, "config", ["experiment=quick", "model.dropout=0.3"]),
        (evaluate.task, "evaluate", []),
    ],
    ids=["run", "run-with-overrides", "evaluate"],
)
def test_the_help_page_is_hydras_own(task, config_name, overrides):
    page = help_page(config_name, overrides)
    assert f"{page}\n" == hydras_own_page(task, overrides)
    assert "== Configuration groups ==" in page and "model: cnn, mlp, seed" in page


def test_only_a_plain_help_command_line_takes_the_fast_path():
    assert help_overrides(["--help"]) == []
    assert help_overrides(["model.dropout=0.3", "--help"]) == ["model.dropout=0.3"]
    assert help_overrides(["model.dropout=0.3"]) is None
    assert help_overrides(["--help", "-m", "seed=1,2"]) is None
    assert help_overrides(["--hydra-help"]) is None


def test_help_with_a_bad_override_is_one_line():
    done = in_process(run.main, ["--help", "model=nope"])
    assert done.returncode == 2
    (line,) = done.stderr.strip().splitlines()
    assert line.startswith("error: ") and "nope" in line
