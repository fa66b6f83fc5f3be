"""The model builder: the reference network exactly, the MLP's shape knobs, every optimizer."""

from __future__ import annotations

import pytest

from mnist_exp.config.schema import OPTIMIZERS
from mnist_exp.training.model import build_model, compile_model, parameter_counts


def layer_kinds(model) -> list[str]:
    return [type(layer).__name__ for layer in model.layers]


def test_seed_model_is_the_reference_network(make_config):
    model = build_model(make_config().model)
    assert layer_kinds(model) == [
        "Dense",
        "Dropout",
        "Dense",
        "Dense",
        "BatchNormalization",
        "Dense",
    ]
    assert [layer.units for layer in model.layers if hasattr(layer, "units")] == [256, 128, 128, 10]
    assert model.layers[1].rate == 0.5
    assert model.layers[-1].activation.__name__ == "softmax"
    assert parameter_counts(model) == (252_170, 251_914)


def test_mlp_puts_batch_norm_and_dropout_after_every_hidden_layer(make_config):
    cfg = make_config(
        "model=mlp", "model.hidden_units=[64,32]", "model.batch_norm=true", "model.activation=gelu"
    )
    model = build_model(cfg.model)
    assert layer_kinds(model) == [
        "Dense",
        "BatchNormalization",
        "Dropout",
        "Dense",
        "BatchNormalization",
        "Dropout",
        "Dense",
    ]
    assert model.layers[0].activation.__name__ == "gelu"


def test_zero_dropout_adds_no_dropout_layer(make_config):
    model = build_model(make_config("model.dropout=0").model)
    assert "Dropout" not in layer_kinds(model)


@pytest.mark.parametrize("name", sorted(OPTIMIZERS))
def test_each_optimizer_compiles_with_its_settings(make_config, name):
    cfg = make_config(f"optimizer={name}", "optimizer.learning_rate=0.02")
    model = build_model(cfg.model)
    compile_model(model, cfg.optimizer)
    assert type(model.optimizer).__name__.lower() == name
    assert float(model.optimizer.learning_rate) == pytest.approx(0.02)
