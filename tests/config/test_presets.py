"""Named experiments (conf/experiment/) and learning-rate schedules."""

from __future__ import annotations

from pathlib import Path

import pytest
from conftest import run_cli

from mnist_exp.config.schema import ConfigError

PRESETS = sorted(path.stem for path in Path("conf/experiment").glob("*.yaml"))


@pytest.mark.slow
def test_every_preset_composes_trains_and_logs(tmp_path, store):
    assert {"seed_reference", "quick", "best_mlp", "cnn"} <= set(PRESETS)
    done = run_cli(
        [
            "-m",
            f"experiment={','.join(PRESETS)}",
            # One short epoch on tiny data, in one process (so one Keras backend).
            "data=mnist_subset",
            "data.train_size=256",
            "train.epochs=2",
            "train.backend=tensorflow",
            # Neither checkpoints nor the logged model are what this test looks at.
            "train.checkpoint=false",
            "tracking.log_model=false",
            f"hydra.sweep.dir={tmp_path / 'sweep'}",
            *store.overrides,
        ],
        cwd=Path.cwd(),
    )
    assert done.returncode == 0, done.stderr
    # Four models built in one process: TensorFlow's retracing warning, filtered out.
    assert "tf.function retracing" not in done.stdout + done.stderr
    runs = store.sweep_children()
    assert len(runs) == len(PRESETS)
    client = store.client()
    for run in runs:
        assert run.info.status == "FINISHED", run.data.tags.get("error")
        assert "final/test_accuracy" in run.data.metrics
        rates = [m.value for m in client.get_metric_history(run.info.run_id, "epoch/learning_rate")]
        if run.data.params["optimizer.schedule"] == "constant":
            assert rates == []  # a param, not a flat line on a chart
            continue
        assert len(rates) == 2 and rates[0] > 0
        if run.data.params["optimizer.schedule"] == "cosine":
            assert rates[1] < rates[0]  # decaying (to 0 at the last step), logged per epoch
        else:
            assert rates[1] == rates[0]
    names = {run.data.params["model.name"] for run in runs}
    assert {"seed", "best_mlp", "cnn"} <= names


@pytest.mark.parametrize(
    ("schedule", "extra", "expected"),
    [
        # (steps_per_epoch=10, epochs=4) -> learning rate after 0, 5, 10, 20, 39 steps
        ("constant", [], [1.0, 1.0, 1.0, 1.0, 1.0]),
        ("warmup", ["optimizer.warmup_epochs=1"], [0.0, 0.5, 1.0, 1.0, 1.0]),
        ("cosine", [], [1.0, 0.9619, 0.8536, 0.5, 0.0015]),
        ("cosine", ["optimizer.warmup_epochs=1"], [0.0, 0.5, 1.0, 0.75, 0.0027]),
        ("exponential", ["optimizer.decay_rate=0.5"], [1.0, 0.7071, 0.5, 0.25, 0.067]),
    ],
)
def test_learning_rate_schedules(make_config, schedule, extra, expected):
    import keras

    from mnist_exp.training.model import learning_rate

    cfg = make_config(f"optimizer.schedule={schedule}", "optimizer.learning_rate=1.0", *extra)
    rate = learning_rate(cfg.optimizer, steps_per_epoch=10, epochs=4)
    steps = [0, 5, 10, 20, 39]
    values = [
        float(keras.ops.convert_to_numpy(rate(step))) if callable(rate) else rate for step in steps
    ]
    assert values == pytest.approx(expected, abs=1e-3)


def test_warmup_schedule_without_warmup_epochs_is_rejected(make_config):
    with pytest.raises(ConfigError, match=r"^optimizer\.warmup_epochs=0 is not allowed with"):
        make_config("optimizer.schedule=warmup")


def test_cnn_builds_from_flat_pixels(make_config):
    import numpy as np

    from mnist_exp.training.model import build_model

    model = build_model(make_config("model=cnn").model)
    kinds = [layer.__class__.__name__ for layer in model.layers]
    assert kinds[:2] == ["Reshape", "Conv2D"] and kinds.count("MaxPooling2D") == 2
    probabilities = model.predict(np.zeros((2, 784), np.float32), verbose=0)
    assert probabilities.shape == (2, 10)
