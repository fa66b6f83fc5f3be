"""Property-based: any invalid override is one line and exit 2; any valid config builds.

Hypothesis throws random overrides at the real CLI entry point (in-process, for speed) and
random valid model/optimizer configs at the model builder.
"""

from __future__ import annotations

import contextlib
import dataclasses
import io
import os
import sys
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mnist_exp import run
from mnist_exp.config import ACTIVATIONS, OPTIMIZERS, PLACEMENTS, ExperimentConfig
from mnist_exp.model import build_model, compile_model, parameter_counts

SECTIONS = {
    f.name: f.default_factory
    for f in dataclasses.fields(ExperimentConfig)
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
    for field in dataclasses.fields(ExperimentConfig):
        if field.type == "int":
            found.append((field.name, field))
    return found


NUMERIC = numeric_fields()
# How many random cases per test; raise it for a deeper soak: BAD_INPUT_EXAMPLES=2000 pytest ...
EXAMPLES = int(os.environ.get("BAD_INPUT_EXAMPLES", "50"))
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
    stderr = io.StringIO()  # never closed: nothing can be left holding a dead stream
    argv = sys.argv
    sys.argv = ["mnist_exp.run", *args]
    try:
        with contextlib.redirect_stderr(stderr), contextlib.redirect_stdout(io.StringIO()):
            run.main()
        code = 0
    except SystemExit as exit_:
        code = exit_.code
    finally:
        sys.argv = argv
    return code, stderr.getvalue().splitlines()


@settings(
    max_examples=EXAMPLES,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(bad=BAD)
def test_any_invalid_override_is_one_line_exit_2_and_no_run(bad, tmp_path):
    override, key = bad
    store = tmp_path / "mlflow.db"
    code, stderr = cli(
        [
            override,
            f"tracking.uri=sqlite:///{store}",
            f"hydra.run.dir={tmp_path / 'run'}",
            "hydra/job_logging=none",
            "hydra/hydra_logging=none",
        ]
    )
    assert code == 2, (override, stderr)
    assert len(stderr) == 1 and stderr[0].startswith("error: "), (override, stderr)
    assert key.split("=")[0].split(".")[-1] in stderr[0], (override, stderr)
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
