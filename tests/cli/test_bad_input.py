"""Property-based: any invalid override is one line and exit 2; any valid config builds.

Hypothesis throws random overrides at the real CLI entry point (in-process, for speed), also
random ``hydra.*`` ones naming Python code (callbacks, launcher, sampler, logging classes),
and random valid model/optimizer configs at the model builder.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
from conftest import EXAMPLES, in_process, one_line_error
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mnist_exp.cli import run
from mnist_exp.config import targets
from mnist_exp.config.schema import ACTIVATIONS, OPTIMIZERS, PLACEMENTS, RunConfig
from mnist_exp.training.model import build_model, compile_model, parameter_counts

SECTIONS = {
    f.name: f.default_factory
    for f in dataclasses.fields(RunConfig)
    if dataclasses.is_dataclass(f.default_factory)
}
SECTIONS["optimizer"] = OPTIMIZERS["adam"]  # the default optimizer's keys
GROUP_OPTIONS = {
    "model": {"seed", "mlp"},
    "optimizer": set(OPTIMIZERS),
    "data": {"mnist"},
    "train": {"default"},
    "tracking": {"local"},
}


def numeric_fields():
    """(dotted key, field) for every bounded int/float key."""
    found = []
    for section, cls in SECTIONS.items():
        for field in dataclasses.fields(cls):
            if field.type in ("int", "float") and {"ge", "gt", "le", "lt"} & set(field.metadata):
                found.append((f"{section}.{field.name}", field))
    for field in dataclasses.fields(RunConfig):
        if field.type == "int":
            found.append((field.name, field))
    return found


NUMERIC = numeric_fields()
INT_KEYS = [key for key, field in NUMERIC if field.type == "int"] + ["model.hidden_units"]
names = st.text("abcdefghijklmnopqrstuvwxyz_", min_size=3, max_size=12)


@st.composite
def out_of_range(draw):
    key, field = draw(st.sampled_from(NUMERIC))
    meta = field.metadata
    bounds = []
    if "ge" in meta:
        bounds.append(draw(st.floats(-1e6, meta["ge"], exclude_max=True)))
    if "gt" in meta:
        bounds.append(draw(st.floats(-1e6, meta["gt"])))
    if "le" in meta:
        bounds.append(draw(st.floats(meta["le"], 1e6, exclude_min=True)))
    if "lt" in meta:
        bounds.append(draw(st.floats(meta["lt"], 1e6)))
    value = draw(st.sampled_from(bounds))
    if field.type == "int":
        value = int(value) - 1 if ("ge" in meta and value < meta["ge"]) else int(value) + 1
        if not ("ge" in meta and value < meta["ge"]) and not ("le" in meta and value > meta["le"]):
            value = int(meta.get("ge", 0)) - 1
    return f"{key}={value!r}", key


@st.composite
def wrong_type(draw):
    key = draw(st.sampled_from(INT_KEYS))
    value = draw(st.one_of(names, st.floats(0.1, 100).filter(lambda v: not v.is_integer())))
    if key == "model.hidden_units":
        return f"{key}=[64,{value}]", key
    return f"{key}={value}", key


@st.composite
def unknown_key(draw):
    section = draw(st.sampled_from(sorted(SECTIONS)))
    name = draw(
        names.filter(lambda n: n not in {f.name for f in dataclasses.fields(SECTIONS[section])})
    )
    return f"{section}.{name}=1", f"{section}.{name}"


@st.composite
def unknown_option(draw):
    group = draw(st.sampled_from(sorted(GROUP_OPTIONS)))
    option = draw(names.filter(lambda n: n not in GROUP_OPTIONS[group]))
    return f"{group}={option}", f"{group}={option}"


@st.composite
def malformed_list(draw):
    text = draw(st.sampled_from(["[", "[1,,2]", "[1 2", "]", "[0]", "[-5,10]", "[[1]]", "{}"]))
    return f"model.hidden_units={text}", "model.hidden_units"


BAD = st.one_of(out_of_range(), wrong_type(), unknown_key(), unknown_option(), malformed_list())


def cli(args: list[str]) -> tuple[int, list[str]]:
    """Run the real entry point in-process; return its exit code and stderr lines."""
    done = in_process(run.main, args)
    return done.returncode, done.stderr.splitlines()


@pytest.mark.slow
@settings(
    max_examples=EXAMPLES,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(bad=BAD)
def test_any_invalid_override_is_one_line_exit_2_and_no_run(bad, tmp_path):
    override, key = bad
    store = tmp_path / "mlflow.db"
    line = one_line_error(tmp_path, override, f"tracking.uri=sqlite:///{store}")
    assert key.split("=")[0].split(".")[-1] in line, (override, line)
    assert not store.exists()


# Dotted names for _target_ and logging class: harmful ones (open would create the file
# its _args_ name), allowed ones, and random ones.
dotted = st.one_of(
    st.sampled_from(
        [
            "builtins.open",
            "shutil.copyfile",
            "pathlib.Path.touch",
            "os.makedirs",
            "builtins.print",
            "logging.config.fileConfig",
            "logging.os.system",
            "logging.FileHandler",
            "logging.StreamHandler",
            targets.SWEEP_CALLBACK,
            *sorted(targets.LAUNCHERS | targets.SWEEPERS),
        ]
    ),
    st.lists(
        names.filter(lambda n: n not in {"true", "false", "null", "nan", "inf"}),
        min_size=1,
        max_size=4,
    ).map(".".join),
)


@st.composite
def hydra_override(draw, made: Path):
    """(overrides, exact expected error line or None when it may be valid or fail otherwise)."""
    name = draw(names.filter(lambda n: n != "mlflow_sweep"))
    target = draw(dotted)
    kind = draw(st.sampled_from(["callback", "launcher", "sweeper", "logging", "unknown", "bare"]))
    if kind == "callback":
        key = f"hydra.callbacks.{name}._target_"
        overrides = [f"+{key}={target}", f"+hydra.callbacks.{name}._args_=[{made},w]"]
        allowed = {targets.SWEEP_CALLBACK}
    elif kind == "launcher":
        key = "hydra.launcher._target_"
        launcher = draw(st.sampled_from(["basic", "joblib"]))
        overrides = [f"hydra/launcher={launcher}", f"{key}={target}"]
        allowed = targets.LAUNCHERS
    elif kind == "sweeper":
        key = "hydra.sweeper._target_"
        overrides = ["hydra/sweeper=optuna", f"{key}={target}"]
        allowed = targets.SWEEPERS
    elif kind == "logging":
        key = f"hydra.job_logging.handlers.{name}.class"
        overrides = [f"+{key}={target}"]
        allowed = {"logging.FileHandler", "logging.StreamHandler"}  # of those drawn here
    elif kind == "unknown":  # an unknown key somewhere in hydra, set or added
        where = draw(st.sampled_from(["hydra", "hydra.job", "hydra.launcher", "hydra.sweeper"]))
        plus = draw(st.sampled_from(["", "+", "++"]))
        return [f"{plus}{where}.{name}={draw(names)}"], None
    else:  # a callback entry without a _target_, or a random dotted key in hydra
        return [draw(st.sampled_from([f"+hydra.callbacks.{name}=1", f"+hydra.{target}=1"]))], None
    if target in allowed:
        return overrides, None
    return overrides, f"error: {key}={target}: not allowed; "


@pytest.mark.slow
@settings(
    max_examples=EXAMPLES,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(data=st.data())
def test_hydra_overrides_naming_code_are_one_line_exit_2_and_touch_nothing(data, tmp_path):
    made = tmp_path / "made"  # what builtins.open would create, had it been called
    overrides, expected = data.draw(hydra_override(made))
    store = tmp_path / "mlflow.db"
    line = one_line_error(
        tmp_path,
        *overrides,
        "model.dropout=1.5",  # a valid config still stops here, before training
        f"tracking.uri=sqlite:///{store}",
    )
    if expected is not None:
        assert line.startswith(expected), (overrides, line)
    assert not made.exists(), overrides
    assert not store.exists()


valid_models = st.fixed_dictionaries(
    {
        "model.hidden_units": st.lists(st.integers(1, 64), max_size=3).map(
            lambda units: "[" + ",".join(map(str, units)) + "]"
        ),
        "model.activation": st.sampled_from(ACTIVATIONS),
        "model.dropout": st.floats(0, 0.9).map(lambda v: round(v, 3)),
        "model.dropout_layers": st.sampled_from(PLACEMENTS),
        "model.batch_norm": st.booleans(),
        "model.batch_norm_layers": st.sampled_from(PLACEMENTS),
        "optimizer": st.sampled_from(sorted(OPTIMIZERS)),
        "optimizer.learning_rate": st.floats(1e-5, 1.0).map(lambda v: float(f"{v:.3g}")),
    }
)


@pytest.mark.slow
@settings(
    max_examples=max(EXAMPLES // 3, 10),
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(values=valid_models)
def test_any_valid_config_builds_and_compiles_a_model(values, make_config):
    overrides = [f"{key}={value}" for key, value in values.items()]
    cfg = make_config(*overrides)
    model = build_model(cfg.model)
    compile_model(model, cfg.optimizer)
    total, trainable = parameter_counts(model)
    assert 0 < trainable <= total
    assert model.output_shape == (None, 10)


def test_strategies_cover_every_bounded_key():
    assert {key for key, _ in NUMERIC} >= {
        "train.epochs",
        "model.dropout",
        "seed",
        "optimizer.learning_rate",
        "train.batch_size",
    }
    assert Path(run.__file__).name == "run.py"
