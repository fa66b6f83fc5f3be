"""The schema: defaults, overrides, and every kind of bad input rejected before any work."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from mnist_exp.config.schema import OPTIMIZERS, ConfigError

# Runs the CLI and reports on exit whether TensorFlow or MLflow was ever imported.
PROBE = """
import atexit, runpy, sys
atexit.register(lambda: print("HEAVY_IMPORTS=" + ",".join(
    m for m in ("tensorflow", "keras", "mlflow") if m in sys.modules), file=sys.stderr))
sys.argv = ["mnist_exp.run", *sys.argv[1:]]
runpy.run_module("mnist_exp.run", run_name="__main__")
"""


def probe_cli(args: list[str], cwd: Path) -> tuple[int, str, list[str], str]:
    """Run the CLI in ``cwd``; return exit code, stdout, stderr lines, heavy modules loaded."""
    done = subprocess.run(
        [sys.executable, "-c", PROBE, *args], cwd=cwd, capture_output=True, text=True, timeout=60
    )
    lines = done.stderr.splitlines()
    heavy = [line for line in lines if line.startswith("HEAVY_IMPORTS=")]
    assert len(heavy) == 1, done.stderr
    lines.remove(heavy[0])
    return done.returncode, done.stdout, lines, heavy[0].split("=", 1)[1]


def test_defaults_reproduce_the_reference_setup(make_config):
    cfg = make_config()
    assert cfg.seed == 42
    assert cfg.model.name == "seed"
    assert list(cfg.model.hidden_units) == [256, 128, 128]
    assert (cfg.model.activation, cfg.model.dropout, cfg.model.batch_norm) == ("relu", 0.5, True)
    assert cfg.optimizer.name == "adam" and cfg.optimizer.learning_rate == 0.001
    assert (cfg.train.epochs, cfg.train.batch_size, cfg.train.validation_split) == (10, 32, 0.1)
    assert cfg.data.name == "mnist" and cfg.data.path is None
    assert cfg.tracking.uri == "sqlite:///outputs/mlflow.db"
    assert cfg.tracking.experiment == "mnist"


def test_mlp_shape_is_one_override_away(make_config):
    cfg = make_config(
        "model=mlp",
        "model.hidden_units=[512,256]",
        "model.dropout=0.3",
        "model.batch_norm=true",
        "model.activation=gelu",
    )
    assert list(cfg.model.hidden_units) == [512, 256]
    assert (cfg.model.dropout, cfg.model.batch_norm, cfg.model.activation) == (0.3, True, "gelu")


@pytest.mark.parametrize("name", sorted(OPTIMIZERS))
def test_every_optimizer_has_a_learning_rate(make_config, name):
    cfg = make_config(f"optimizer={name}", "optimizer.learning_rate=0.05")
    assert cfg.optimizer.name == name and cfg.optimizer.learning_rate == 0.05


def test_sgd_and_adamw_expose_their_own_hyperparameters(make_config):
    sgd = make_config("optimizer=sgd", "optimizer.momentum=0.5", "optimizer.nesterov=true")
    assert (sgd.optimizer.momentum, sgd.optimizer.nesterov) == (0.5, True)
    assert (
        make_config("optimizer=adamw", "optimizer.weight_decay=0.01").optimizer.weight_decay == 0.01
    )


def test_validation_rejects_a_value_outside_its_range(make_config):
    with pytest.raises(ConfigError, match=r"^train\.validation_split=1\.0 .*< 1"):
        make_config("train.validation_split=1.0")


# (override, text the one-line error must contain: the key and what is allowed)
BAD_OVERRIDES = [
    (
        "model.hiden_units=3",
        "model.hiden_units: unknown key; allowed keys here: type, name, hidden_units",
    ),
    ("train.epochs=ten", "train.epochs='ten' is not allowed; expected an integer >= 1"),
    ("model.dropout=1.5", "model.dropout=1.5 is not allowed; expected a number >= 0 and < 1"),
    ("train.epochs=0", "train.epochs=0 is not allowed; expected an integer >= 1"),
    (
        "optimizer.learning_rate=-1",
        "optimizer.learning_rate=-1.0 is not allowed; expected a number > 0",
    ),
    ("train.batch_size=0", "train.batch_size=0 is not allowed; expected an integer >= 1"),
    ("optimizer=adamx", "optimizer=adamx: no such option; available: adam, adamw, rmsprop, sgd"),
    (
        "model.activation=softmaxx",
        "model.activation='softmaxx' is not allowed; expected one of: relu",
    ),
    (
        "model.hidden_units=[64,x]",
        "model.hidden_units='x' is not allowed; expected a list of integers",
    ),
    ("model.hidden_units=[1,", "cannot parse override 'model.hidden_units=[1,'"),
    (
        "optimizer.momentum=0.9",
        "optimizer.momentum: unknown key; allowed keys here: name, learning_rate",
    ),
    (
        "+extra=1",
        "extra: unknown key; allowed keys here: seed, resume, rerun, sweep_fresh, data, model",
    ),
    (
        "sweep=dropout_lr",
        "sweep=dropout_lr: sweep is not in the default config list; add it with a +: "
        "+sweep=dropout_lr (and run it as a sweep: python -m mnist_exp.run -m +sweep=dropout_lr)",
    ),
]


@pytest.mark.parametrize(("override", "expected"), BAD_OVERRIDES, ids=[o for o, _ in BAD_OVERRIDES])
def test_bad_override_is_one_line_exit_2_before_any_heavy_import(tmp_path, override, expected):
    code, stdout, stderr, heavy = probe_cli([override], cwd=tmp_path)
    assert code == 2
    assert len(stderr) == 1 and stderr[0].startswith(f"error: {expected}"), stderr
    assert "Traceback" not in stdout
    assert heavy == "", f"imported {heavy} before rejecting the config"
    assert not (tmp_path / "outputs" / "mlflow.db").exists(), "an MLflow store was created"


def test_missing_data_file_is_rejected_before_tensorflow(tmp_path):
    code, _, stderr, heavy = probe_cli(["data.path=nowhere/mnist.npz"], cwd=tmp_path)
    assert (code, heavy) == (2, "")
    assert stderr == ["error: data.path='nowhere/mnist.npz': no such file or folder"]
    assert not (tmp_path / "outputs" / "mlflow.db").exists()


@pytest.mark.parametrize("args", [["--help"], ["--cfg", "job"]], ids=["help", "cfg-job"])
def test_help_and_cfg_job_import_no_tensorflow(tmp_path, args):
    code, stdout, _, heavy = probe_cli(args, cwd=tmp_path)
    assert code == 0
    assert heavy == ""
    assert "optimizer" in stdout
