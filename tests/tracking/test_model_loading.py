"""Model folders are code-adjacent: only the project's own format loads, nothing else runs.

A real TensorFlow SavedModel whose graph writes a file, behind an ``MLmodel`` that points
MLflow's keras flavor at it (the ``save_exported_model`` layout), is refused by
``python -m mnist_exp.predict`` and by ``mnist_exp.tracking.model_loading.load_model`` without the
file ever being written; other flavors, folders without ``MLmodel``, model paths that leave
the folder and pickles are refused the same way. Models logged the project's way still load
from every kind of reference and predict.
"""

from __future__ import annotations

import json
import os
import pickle
from pathlib import Path

import keras
import mlflow
import numpy as np
import pytest
from conftest import Store, run_cli
from omegaconf import OmegaConf
from PIL import Image

from mnist_exp.cli import predict
from mnist_exp.config.schema import ConfigError
from mnist_exp.data.images import load_digit
from mnist_exp.tracking.model_loading import ALLOWED, ModelRefused, load_model
from mnist_exp.tracking.recorder import RunRecorder
from mnist_exp.training.inference import PREDICT_BATCH, predict_probabilities

REGISTERED = "trust-test"


def refusal_prefix(uri: str | Path) -> str:
    return f"model_uri={uri}: refused: {ALLOWED}; found "


def keras_mlmodel(data: str, exported: bool | str | None = False) -> str:
    """An MLmodel like mlflow.keras.save_model writes (MLflow 3.17), ``data`` and the
    ``save_exported_model`` flag as given (None: the flag left out)."""
    flag = "" if exported is None else f"    save_exported_model: {str(exported).lower()}\n"
    return (
        "flavors:\n"
        "  keras:\n"
        f"    data: {data}\n"
        "    keras_backend: tensorflow\n"
        f"    keras_version: {keras.__version__}\n"
        f"{flag}"
        "  python_function:\n"
        "    loader_module: mlflow.keras\n"
        "mlflow_version: 3.17.2\n"
    )


def armed_savedmodel(path: Path, marker: Path) -> None:
    """A real SavedModel at ``path`` whose ``predict`` and ``serve`` graphs write ``marker``.

    ``predict`` is traced for exactly the call ``predict_probabilities`` makes, so whatever
    loads it with ``tf.saved_model.load`` and predicts runs the write.
    """
    import tensorflow as tf

    def payload(x):
        tf.io.write_file(str(marker), "graph ops from the model folder ran")
        return tf.zeros([tf.shape(x)[0], 10])

    class Payload(tf.Module):
        @tf.function(autograph=False)
        def predict(self, x, batch_size=None, verbose=None):
            return payload(x)

        @tf.function(autograph=False, input_signature=[tf.TensorSpec([None, 784], tf.float32)])
        def serve(self, x):
            return payload(x)

    module = Payload()
    spec = tf.TensorSpec([None, 784], tf.float32)
    module.predict.get_concrete_function(spec, batch_size=PREDICT_BATCH, verbose=0)
    tf.saved_model.save(module, str(path))


@pytest.fixture(scope="module")
def armed(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """(SavedModel folder, marker file its graph writes); the marker does not exist yet."""
    base = tmp_path_factory.mktemp("armed")
    marker = base / "marker" / "pwned.txt"
    marker.parent.mkdir()
    armed_savedmodel(base / "savedmodel", marker)
    return base / "savedmodel", marker


def crafted_folder(base: Path, armed: tuple[Path, Path], mlmodel: str) -> Path:
    """A model folder laid out like MLflow's exported keras model: ``data/model`` is the
    armed SavedModel and ``MLmodel`` is ``mlmodel``."""
    import shutil

    folder = base / "crafted"
    shutil.copytree(armed[0], folder / "data" / "model")
    (folder / "data" / "keras_module.txt").write_text("keras")
    (folder / "MLmodel").write_text(mlmodel)
    return folder


@pytest.fixture
def digit_png(tmp_path: Path, mnist_npz: Path) -> Path:
    """A real MNIST test digit saved as a PNG."""
    with np.load(mnist_npz) as data:
        Image.fromarray(data["x_test"][0]).save(tmp_path / "digit.png")
    return tmp_path / "digit.png"


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory: pytest.TempPathFactory, mnist_npz: Path) -> keras.Model:
    """A 784-16-10 MLP fitted for 2 epochs on the 600 training digits."""
    with np.load(mnist_npz) as data:
        x = data["x_train"].reshape(-1, 784).astype(np.float32) / 255
        y = data["y_train"]
    keras.utils.set_random_seed(0)
    model = keras.Sequential(
        [
            keras.Input((784,)),
            keras.layers.Dense(16, activation="relu"),
            keras.layers.Dense(10, activation="softmax"),
        ]
    )
    model.compile("adam", "sparse_categorical_crossentropy", metrics=["accuracy"])
    model.fit(x, y, epochs=2, batch_size=64, verbose=0)
    return model


@pytest.fixture(scope="module")
def keras_file(tmp_path_factory: pytest.TempPathFactory, tiny_model: keras.Model) -> Path:
    """``tiny_model`` as a native .keras file."""
    path = tmp_path_factory.mktemp("native") / "model.keras"
    tiny_model.save(path)
    return path


# --- the crafted SavedModel folder -------------------------------------------------------


def test_the_crafted_folder_really_runs_code_through_mlflows_own_loader(armed, tmp_path):
    """The control: the folder is a working exploit for ``mlflow.keras.load_model``."""
    folder, marker = armed
    folder = crafted_folder(tmp_path, armed, keras_mlmodel("data", exported=True))
    try:
        predict_probabilities(mlflow.keras.load_model(str(folder)), np.zeros((2, 784), "float32"))
        assert marker.read_text() == "graph ops from the model folder ran"
    finally:
        marker.unlink(missing_ok=True)


@pytest.mark.slow
def test_predict_cli_refuses_the_crafted_folder_in_one_line_and_runs_nothing(
    armed, tmp_path, digit_png
):
    folder = crafted_folder(tmp_path, armed, keras_mlmodel("data", exported=True))
    marker = armed[1]
    work = tmp_path / "work"
    work.mkdir()
    done = run_cli(
        [str(folder), str(digit_png), "--tracking-uri", f"sqlite:///{tmp_path / 'mlflow.db'}"],
        cwd=work,
        timeout=120,
        module="mnist_exp.predict",
    )
    assert done.returncode == 2, done.stderr
    lines = done.stderr.splitlines()
    assert len(lines) == 1, done.stderr
    assert lines[0].startswith(f"error: {refusal_prefix(folder)}flavor 'keras' with a SavedModel")
    assert done.stdout == ""
    assert not marker.exists()


@pytest.mark.parametrize(
    ("mlmodel", "found"),
    [
        (keras_mlmodel("data", exported=True), "flavor 'keras' with a SavedModel"),
        # The flag lies or is missing: the SavedModel on disk is still refused.
        (keras_mlmodel("data", exported=False), "flavor 'keras' with a SavedModel in 'data'"),
        (keras_mlmodel("data", exported=None), "flavor 'keras' with a SavedModel in 'data'"),
        (
            keras_mlmodel("data/model", exported=False),
            "flavor 'keras' with a SavedModel in 'data/model'",
        ),
        (keras_mlmodel("data", exported="yes"), "flavor 'keras' with a SavedModel"),
    ],
)
def test_load_model_refuses_savedmodels_whatever_mlmodel_claims(armed, tmp_path, mlmodel, found):
    folder = crafted_folder(tmp_path, armed, mlmodel)
    for uri in (str(folder), folder.as_uri()):
        with pytest.raises(ModelRefused) as refused:
            load_model(uri)
        message = str(refused.value)
        assert message.startswith(refusal_prefix(uri) + found), message
        assert "\n" not in message
        assert isinstance(refused.value, ConfigError)  # CLIs print it as one error: line
    assert not armed[1].exists()


@pytest.mark.slow
def test_load_model_refuses_the_crafted_folder_logged_as_run_artifacts(armed, store, tmp_path):
    """Downloaded through ``runs:/<id>/model``, the same folder is refused after download."""
    folder = crafted_folder(tmp_path, armed, keras_mlmodel("data", exported=True))
    mlflow.set_tracking_uri(store.uri)
    experiment = mlflow.create_experiment("trust", store.artifacts.as_uri())
    with mlflow.start_run(experiment_id=experiment) as run:
        mlflow.log_artifacts(str(folder), "model")
    uri = f"runs:/{run.info.run_id}/model"
    with pytest.raises(ModelRefused, match="flavor 'keras' with a SavedModel") as refused:
        load_model(uri)
    assert str(refused.value).startswith(refusal_prefix(uri))
    assert not armed[1].exists()


# --- other things that are not the project's format --------------------------------------


class Mkdir:
    """Unpickling this creates a folder: a stand-in for any code a pickle can run."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def __reduce__(self):
        return os.mkdir, (str(self.path),)


def pyfunc_only(folder: Path, keras_file: Path, marker: Path) -> str:
    (folder / "python_model.pkl").write_bytes(pickle.dumps(Mkdir(marker)))
    (folder / "MLmodel").write_text(
        "flavors:\n"
        "  python_function:\n"
        "    cloudpickle_version: 3.1.1\n"
        "    loader_module: mlflow.pyfunc.model\n"
        "    python_model: python_model.pkl\n"
    )
    return "flavor 'python_function' only"


def no_mlmodel(folder: Path, keras_file: Path, marker: Path) -> str:
    (folder / "data").mkdir()
    (folder / "data" / "model.keras").write_bytes(keras_file.read_bytes())
    return "a folder without an MLmodel file"


def data_escapes_with_dots(folder: Path, keras_file: Path, marker: Path) -> str:
    outside = folder.parent / "outside"
    outside.mkdir()
    (outside / "model.keras").write_bytes(keras_file.read_bytes())
    (folder / "MLmodel").write_text(keras_mlmodel("../outside"))
    return "flavor 'keras' with data '../outside', a path outside the folder"


def data_is_absolute(folder: Path, keras_file: Path, marker: Path) -> str:
    (folder / "MLmodel").write_text(keras_mlmodel(str(keras_file.parent)))
    return f"flavor 'keras' with data '{keras_file.parent}', a path outside the folder"


def model_file_links_outside(folder: Path, keras_file: Path, marker: Path) -> str:
    (folder / "data").mkdir()
    (folder / "data" / "model.keras").symlink_to(keras_file)
    (folder / "MLmodel").write_text(keras_mlmodel("data"))
    return "flavor 'keras' whose data/model.keras links outside the folder"


def keras_file_missing(folder: Path, keras_file: Path, marker: Path) -> str:
    (folder / "data").mkdir()
    (folder / "MLmodel").write_text(keras_mlmodel("data"))
    return "flavor 'keras' without its .keras file (data/model.keras is missing)"


def mlmodel_with_python_tags(folder: Path, keras_file: Path, marker: Path) -> str:
    (folder / "MLmodel").write_text(f"flavors: !!python/object/apply:os.mkdir ['{marker}']\n")
    return "an MLmodel that is not readable YAML"


def lambda_layer(folder: Path, keras_file: Path, marker: Path) -> str:
    model = keras.Sequential([keras.Input((784,)), keras.layers.Lambda(lambda x: x * 2)])
    (folder / "data").mkdir()
    model.save(folder / "data" / "model.keras")
    (folder / "MLmodel").write_text(keras_mlmodel("data"))
    return "a .keras file that Keras safe mode does not load"


@pytest.mark.parametrize(
    "make",
    [
        pyfunc_only,
        no_mlmodel,
        data_escapes_with_dots,
        data_is_absolute,
        model_file_links_outside,
        keras_file_missing,
        mlmodel_with_python_tags,
        lambda_layer,
    ],
)
def test_load_model_refuses_anything_but_the_projects_format(tmp_path, keras_file, make):
    folder = tmp_path / "model"
    folder.mkdir()
    marker = tmp_path / "unpickled"
    found = make(folder, keras_file, marker)
    with pytest.raises(ModelRefused) as refused:
        load_model(str(folder))
    message = str(refused.value)
    assert message.startswith(refusal_prefix(folder) + found), message
    assert "\n" not in message
    assert not marker.exists()


def test_load_model_refuses_a_legacy_h5_file_and_names_a_missing_path(tmp_path):
    legacy = tmp_path / "model.h5"
    # Not the shared tiny_model: a legacy .h5 save drops a compiled model's optimizer config.
    keras.Sequential([keras.Input((784,)), keras.layers.Dense(10)]).save(legacy)
    with pytest.raises(ModelRefused) as refused:
        load_model(str(legacy))
    assert str(refused.value) == refusal_prefix(legacy) + "a file that is not a native .keras file"
    with pytest.raises(FileNotFoundError, match="no such file or folder"):
        load_model(str(tmp_path / "nowhere"))


# --- the project's own format still loads ---------------------------------------------------


@pytest.fixture
def logged(store: Store, tiny_model: keras.Model) -> tuple[Store, str, Path]:
    """``tiny_model`` logged by the run recorder (``RunRecorder.log_model``) and registered
    as ``trust-test`` version 1: (store, run id, the model's local artifact folder)."""
    tracking = OmegaConf.create(
        {"uri": store.uri, "experiment": "trust", "artifact_location": str(store.artifacts)}
    )
    with RunRecorder.start(tracking) as recorder:
        recorder.log_model(tiny_model, register_as=REGISTERED)
    (mlmodel,) = store.artifacts.rglob("MLmodel")
    return store, recorder.run_id, mlmodel.parent


@pytest.mark.slow
def test_logged_model_loads_from_every_reference_and_predicts(logged, tiny_model, keras_file):
    _, run_id, folder = logged
    x = np.random.default_rng(0).random((5, 784), dtype=np.float32)
    expected = tiny_model.predict(x, verbose=0)
    for uri in (
        f"runs:/{run_id}/model",
        f"models:/{REGISTERED}/1",
        str(folder),
        folder.as_uri(),
        str(keras_file),
    ):
        model = load_model(uri)
        np.testing.assert_allclose(predict_probabilities(model, x), expected, atol=1e-6)
        assert model.optimizer is not None  # compiled, as training left it


def test_predict_cli_still_classifies_with_a_bare_run_id(logged, tiny_model, digit_png, capsys):
    store, run_id, _ = logged
    code = predict.main([run_id, str(digit_png), "--json", "--tracking-uri", store.uri])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    (result,) = json.loads(captured.out)
    expected = tiny_model.predict(load_digit(digit_png)[None], verbose=0)[0]
    assert result["digit"] == int(expected.argmax())
    np.testing.assert_allclose(result["probabilities"], expected, atol=1e-5)
