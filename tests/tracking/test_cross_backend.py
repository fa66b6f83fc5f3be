"""A model trained on one Keras backend evaluates and predicts on the other, through the CLIs.

``python -m mnist_exp.run train.backend=B`` trains and logs a model; ``python -m
mnist_exp.evaluate`` and ``python -m mnist_exp.predict``, started with ``KERAS_BACKEND`` set
to the other backend, load it from the store, reproduce the run's test accuracy and predict
what the training backend predicts. Neither command records the backend it ran on, so each
runs under a small probe that writes ``keras.backend.backend()`` once the command is done:
a command that ignored ``KERAS_BACKEND`` would fail here instead of passing unnoticed.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from conftest import Store, run_cli, run_id_of
from PIL import Image

BACKENDS = ("jax", "tensorflow")
IMAGES = 12  # test digits written as PNG files for predict

# ``python -m backend_probe MODULE ARGS`` runs ``python -m MODULE ARGS`` (its __main__, exit
# code and all), then writes the backend Keras ran on to $BACKEND_PROBE_OUT.
PROBE = """\
import json, os, runpy, sys

target = sys.argv.pop(1)
try:
    runpy.run_module(target, run_name="__main__", alter_sys=True)
finally:
    keras = sys.modules.get("keras")
    with open(os.environ["BACKEND_PROBE_OUT"], "w") as out:
        json.dump({"backend": keras.backend.backend() if keras else None}, out)
"""


def probed(module: str, args: list[str], cwd: Path, backend: str):
    """``python -m MODULE ARGS`` in ``cwd`` with ``KERAS_BACKEND=backend``: the finished
    process and the Keras backend it really ran on."""
    (cwd / "backend_probe.py").write_text(PROBE)
    out = cwd / f"probe-{module}-{backend}.json"
    done = run_cli(
        [module, *args],
        cwd=cwd,
        env={"KERAS_BACKEND": backend, "BACKEND_PROBE_OUT": str(out)},
        module="backend_probe",
    )
    ran_on = json.loads(out.read_text())["backend"] if out.exists() else None
    return done, ran_on


def predict_json(run_id: str, images: list[Path], store: Store, cwd: Path, backend: str):
    """``predict RUN_ID IMAGES --json`` under ``backend``: its results, parsed."""
    done, ran_on = probed(
        "mnist_exp.predict",
        [run_id, *map(str, images), "--json", "--tracking-uri", store.uri],
        cwd,
        backend,
    )
    assert done.returncode == 0, done.stderr
    assert ran_on == backend
    return json.loads(done.stdout)


@pytest.mark.slow
@pytest.mark.parametrize(("trained_on", "loaded_on"), [BACKENDS, BACKENDS[::-1]], ids=lambda b: b)
def test_a_model_trained_on_one_backend_evaluates_and_predicts_on_the_other(
    tmp_path, store, mnist_npz, trained_on, loaded_on
):
    trained = run_cli(
        [
            f"train.backend={trained_on}",
            f"data.path={mnist_npz}",
            "train.epochs=1",
            "train.verbose=0",
            "train.checkpoint=false",
            f"hydra.run.dir={tmp_path / 'run'}",
            *store.overrides,
        ],
        cwd=tmp_path,
    )
    assert trained.returncode == 0, trained.stderr
    run_id = run_id_of(trained.stdout)
    run = store.client().get_run(run_id)
    assert run.data.tags["keras.backend"] == trained_on
    accuracy = run.data.metrics["final/test_accuracy"]

    # evaluate on the other backend: the run's own test set, the run's accuracy.
    evaluated, ran_on = probed(
        "mnist_exp.evaluate",
        [f"run_id={run_id}", f"hydra.run.dir={tmp_path / 'evaluate'}", *store.overrides],
        tmp_path,
        loaded_on,
    )
    assert evaluated.returncode == 0, evaluated.stderr
    assert ran_on == loaded_on
    (evaluation,) = [r for r in store.runs() if r.data.tags.get("mnist_exp.kind") == "evaluation"]
    assert evaluation.data.tags["evaluated_model"] == f"runs:/{run_id}/model"
    assert evaluation.data.tags["evaluated_on"] == "training_run_data"
    assert evaluation.data.tags["keras.backend"] == loaded_on
    assert abs(evaluation.data.metrics["final/test_accuracy"] - accuracy) < 1e-6
    assert f"test accuracy  {accuracy:.4f}" in evaluated.stdout
    assert "on the 200 test images of " in evaluated.stdout

    # predict on both backends: the same digits, the same probabilities.
    with np.load(mnist_npz) as arrays:
        digits, labels = arrays["x_test"][:IMAGES], arrays["y_test"][:IMAGES]
    images = []
    for index, digit in enumerate(digits):
        images.append(tmp_path / f"digit-{index}.png")
        Image.fromarray(digit).save(images[-1])
    reference = predict_json(run_id, images, store, tmp_path, trained_on)
    other = predict_json(run_id, images, store, tmp_path, loaded_on)
    assert [r["file"] for r in other] == [str(path) for path in images]
    for result in other:
        assert set(result) == {"file", "digit", "probability", "probabilities"}
        assert len(result["probabilities"]) == 10
        assert sum(result["probabilities"]) == pytest.approx(1, abs=1e-4)
        assert result["digit"] == int(np.argmax(result["probabilities"]))
    assert [r["digit"] for r in other] == [r["digit"] for r in reference]
    np.testing.assert_allclose(
        [r["probabilities"] for r in other], [r["probabilities"] for r in reference], atol=1e-5
    )
    # A model that learnt something (1 epoch on 540 digits: about half right, chance 1 in 10).
    right = int(np.sum(np.array([r["digit"] for r in other]) == labels))
    assert right >= IMAGES // 3, (right, [r["digit"] for r in other], labels.tolist())
