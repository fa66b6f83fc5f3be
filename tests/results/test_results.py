"""Results a person uses: report artifacts, evaluate, predict, the registry and serving."""

from __future__ import annotations

import json
import urllib.request

import keras
import numpy as np
import pytest
from conftest import Store, in_process, mlflow_on_loopback, run_cli, train_in_process
from PIL import Image

from mnist_exp.cli import evaluate, predict
from mnist_exp.results.leaderboard import JobResult, Leaderboard
from mnist_exp.results.metric_names import OBJECTIVE, TEST_ACCURACY, read
from mnist_exp.results.report import ClassificationReport

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
MODEL_NAME = "mnist-test"


@pytest.fixture(scope="module")
def trained(tmp_path_factory, mnist_npz):
    """Two real 3-epoch runs registered as versions 1 and 2 of MODEL_NAME."""
    folder = tmp_path_factory.mktemp("results")
    store = Store(uri=f"sqlite:///{folder / 'mlflow.db'}", artifacts=folder / "mlartifacts")
    overrides = [
        f"data.path={mnist_npz}",
        "train.epochs=3",
        f"tracking.register_as={MODEL_NAME}",
        "train.verbose=0",
        *store.overrides,
    ]
    for _ in range(2):
        splits = train_in_process(*overrides)
    first, second = store.runs()
    return store, first, second, splits, folder


def logged_model(store: Store, uri: str) -> keras.Model:
    import mlflow

    mlflow.set_tracking_uri(store.uri)
    return mlflow.keras.load_model(uri)


def read_json(store: Store, run_id: str, path: str, folder):
    with open(download(store, run_id, path, folder)) as handle:
        return json.load(handle)


def download(store: Store, run_id: str, path: str, folder) -> str:
    return store.client().download_artifacts(run_id, path, str(folder))


def test_the_terminal_leaderboard_shows_swept_params_only_when_names_do_not_tell_runs_apart():
    def board(*names: str) -> Leaderboard:
        return Leaderboard.from_results(
            [
                JobResult(f"id{i}", "FINISHED", {"model.dropout": f"0.{i}"}, 0.9, 0.9, name=n)
                for i, n in enumerate(names)
            ]
        )

    named = board("dropout=0.0", "dropout=0.1")
    assert named.names_distinct()
    assert "model.dropout" not in named.rows(params=False)[0]
    assert not board("mine", "mine").names_distinct()  # tracking.run_name=mine
    assert not board("", "").names_distinct()


def test_runs_logged_under_the_old_metric_names_are_still_read():
    assert read({"final_val_accuracy": 0.9, "test_accuracy": 0.8}, OBJECTIVE) == 0.9
    assert read({"final_val_accuracy": 0.9, OBJECTIVE: 0.95}, OBJECTIVE) == 0.95
    assert read({"test_accuracy": 0.8}, TEST_ACCURACY) == 0.8
    assert read({}, OBJECTIVE) is None


def test_report_metrics_and_per_class_scores_are_consistent():
    labels = np.array([0, 0, 1, 1, 2, 2])
    probabilities = np.eye(3)[[0, 1, 1, 1, 2, 0]] * 0.9 + 0.1 / 3
    report = ClassificationReport(labels, probabilities, ["a", "b", "c"])
    assert report.confusion_matrix().tolist() == [[1, 1, 0], [0, 2, 0], [1, 0, 1]]
    scores = report.per_class()
    assert scores["b"] == pytest.approx(
        {"precision": 2 / 3, "recall": 1.0, "f1": 0.8, "support": 2}
    )
    assert report.accuracy == pytest.approx(4 / 6)
    assert report.metrics()["final/test_f1/a"] == pytest.approx(0.5)
    mistakes = report.most_confident_mistakes()
    assert [(m["index"], m["true"], m["predicted"]) for m in mistakes] == [
        (1, "a", "b"),
        (5, "c", "a"),
    ]


@pytest.mark.slow
def test_run_logs_figures_and_reports_that_match_its_test_set(trained, tmp_path):
    store, run, _, splits, _ = trained
    artifacts = {a.path for a in store.client().list_artifacts(run.info.run_id, "report")}
    expected = {
        "learning_curves.png",
        "confusion_matrix.png",
        "misclassified.png",
        "confusion_matrix.json",
        "classification_report.json",
        "misclassified.json",
    }
    assert {f"report/{name}" for name in expected} <= artifacts
    for figure in ("learning_curves", "confusion_matrix", "misclassified"):
        with open(download(store, run.info.run_id, f"report/{figure}.png", tmp_path), "rb") as f:
            assert f.read(8) == PNG_MAGIC

    matrix = read_json(store, run.info.run_id, "report/confusion_matrix.json", tmp_path)
    counts = np.array(matrix["matrix"])
    assert counts.sum() == len(splits.y_test) == 200
    assert counts.sum(axis=1).tolist() == np.bincount(splits.y_test, minlength=10).tolist()
    accuracy = np.trace(counts) / counts.sum()
    assert run.data.metrics["final/test_accuracy"] == pytest.approx(accuracy)

    report = read_json(store, run.info.run_id, "report/classification_report.json", tmp_path)
    for digit in range(10):
        f1 = report["classes"][str(digit)]["f1"]
        assert run.data.metrics[f"final/test_f1/{digit}"] == round(f1, 4)

    # The mistakes grid shows only misclassified digits, surest first.
    predicted = (
        logged_model(store, f"runs:/{run.info.run_id}/model")
        .predict(splits.x_test, verbose=0)
        .argmax(axis=1)
    )
    mistakes = read_json(store, run.info.run_id, "report/misclassified.json", tmp_path)
    assert mistakes, "a 3-epoch model on 540 digits makes mistakes"
    for mistake in mistakes:
        index = mistake["index"]
        assert int(mistake["true"]) == splits.y_test[index] != predicted[index]
        assert int(mistake["predicted"]) == predicted[index]
    probabilities = [m["probability"] for m in mistakes]
    assert probabilities == sorted(probabilities, reverse=True)


@pytest.mark.slow
def test_evaluate_reproduces_the_runs_test_accuracy_exactly(trained, mnist_npz):
    store, first, second, _, folder = trained
    for reference in (f"run_id={first.info.run_id}", f"model_uri=models:/{MODEL_NAME}/2"):
        args = [reference, f"data.path={mnist_npz}", *store.overrides]
        if reference.startswith("run_id"):
            done = run_cli(args, cwd=folder, module="mnist_exp.evaluate")
        else:  # the same command in this process (its imports paid for already)
            done = in_process(evaluate.main, [*args, f"hydra.run.dir={folder / 'evaluate'}"])
        assert done.returncode == 0, done.stderr
        evaluation = next(
            run
            for run in reversed(store.runs())
            if run.data.tags.get("mnist_exp.kind") == "evaluation"
        )
        source = first if reference.startswith("run_id") else second
        assert (
            evaluation.data.metrics["final/test_accuracy"]
            == source.data.metrics["final/test_accuracy"]
        )
        assert evaluation.data.metrics["final/test_f1/3"] == source.data.metrics["final/test_f1/3"]
        assert f"test accuracy  {source.data.metrics['final/test_accuracy']:.4f}" in done.stdout
        assert "report/confusion_matrix.png" in {
            a.path for a in store.client().list_artifacts(evaluation.info.run_id, "report")
        }


@pytest.mark.slow
def test_evaluate_rejects_an_unknown_model_in_one_line(trained, mnist_npz):
    store, _, _, _, folder = trained
    done = run_cli(
        ["model_uri=models:/no-such-model/1", f"data.path={mnist_npz}", *store.overrides],
        cwd=folder,
        module="mnist_exp.evaluate",
    )
    assert done.returncode == 2
    assert (
        done.stderr.strip()
        .splitlines()[-1]
        .startswith("error: cannot load model models:/no-such-model/1")
    )


def test_registry_versions_increment_and_point_at_their_runs(trained):
    store, first, second, _, _ = trained
    versions = store.client().search_model_versions(f"name='{MODEL_NAME}'")
    by_number = {int(v.version): v.run_id for v in versions}
    assert by_number == {1: first.info.run_id, 2: second.info.run_id}


def confident_digits(store, run, splits, count=3):
    """Test digits the model gets right with probability > 0.5, most confident first."""
    probabilities = logged_model(store, f"runs:/{run.info.run_id}/model").predict(
        splits.x_test, verbose=0
    )
    right = np.flatnonzero(probabilities.argmax(axis=1) == splits.y_test)
    best = right[np.argsort(-probabilities[right].max(axis=1))][:count]
    assert probabilities[best].max(axis=1).min() > 0.5
    return best


def test_predict_classifies_real_digits_saved_as_images(trained, tmp_path, capsys):
    store, _, second, splits, _ = trained
    files, labels = [], []
    for index in confident_digits(store, second, splits):
        pixels = (splits.x_test[index].reshape(28, 28) * 255).round().astype(np.uint8)
        label = int(splits.y_test[index])
        Image.fromarray(pixels).save(tmp_path / f"{index}.png")  # MNIST polarity
        Image.fromarray(255 - pixels).save(tmp_path / f"{index}_ink.png")  # dark on light
        Image.fromarray(255 - pixels).resize((112, 112)).convert("RGB").save(
            tmp_path / f"{index}_big.jpg", quality=95
        )  # resized colour JPEG
        files += [
            str(tmp_path / name)
            for name in (f"{index}.png", f"{index}_ink.png", f"{index}_big.jpg")
        ]
        labels += [label] * 3
    bad = tmp_path / "notes.png"
    bad.write_text("not an image")

    code = predict.main(
        [f"models:/{MODEL_NAME}/2", *files, str(bad), "--json", "--tracking-uri", store.uri]
    )
    captured = capsys.readouterr()
    assert code == 1  # one bad file
    results = json.loads(captured.out)
    assert [r["file"] for r in results] == [*files, str(bad)]
    assert [r["digit"] for r in results[:-1]] == labels
    assert all(len(r["probabilities"]) == 10 for r in results[:-1])
    assert results[-1]["error"].startswith(f"{bad}: not an image file")
    assert captured.err.strip() == f"error: {bad}: not an image file (cannot identify image file)"


@pytest.mark.slow
def test_served_model_answers_a_real_http_request(trained):
    store, _, _, splits, folder = trained
    serve = ["models", "serve", "-m", f"models:/{MODEL_NAME}/2", "--env-manager", "local"]
    store_env = {"MLFLOW_TRACKING_URI": store.uri}
    with mlflow_on_loopback(serve, "/ping", cwd=folder, env=store_env) as base:
        body = json.dumps({"inputs": splits.x_test[:8].tolist()}).encode()
        request = urllib.request.Request(
            f"{base}/invocations", data=body, headers={"Content-Type": "application/json"}
        )
        with urllib.request.urlopen(request, timeout=60) as reply:
            served = np.array(json.load(reply)["predictions"])
    assert served.shape == (8, 10)
    assert np.allclose(served.sum(axis=1), 1, atol=1e-4)
    local = logged_model(store, f"models:/{MODEL_NAME}/2").predict(splits.x_test[:8], verbose=0)
    assert served.argmax(axis=1).tolist() == local.argmax(axis=1).tolist()


def test_predict_request_mode_prints_a_serving_body(tmp_path, capsys, mnist_npz):
    with np.load(mnist_npz) as data:
        Image.fromarray(data["x_test"][0]).save(tmp_path / "digit.png")
    assert predict.main(["unused-model", str(tmp_path / "digit.png"), "--request"]) == 0
    body = json.loads(capsys.readouterr().out)
    assert np.array(body["inputs"]).shape == (1, 784)


def test_a_pruned_trial_is_listed_as_pruned_never_ranked_nor_failed():
    from mnist_exp.results.leaderboard import JobResult, Leaderboard

    def result(run_id, status, dropout, val, pruned=False):
        return JobResult(run_id, status, {"model.dropout": dropout}, val, val, pruned=pruned)

    board = Leaderboard.from_results(
        [
            result("a", "FINISHED", "0.1", 0.90),
            result("b", "FINISHED", "0.2", 0.95, pruned=True),  # high after 1 epoch
            result("c", "FAILED", "0.3", None),
            result("d", "FINISHED", "0.4", 0.80),
        ]
    )
    assert [r.run_id for r in board.ranked] == ["a", "d"]
    assert board.best.run_id == "a"
    assert [(row["run_id"], row["rank"], row["best"]) for row in board.rows()] == [
        ("a", "1", "*"),
        ("d", "2", ""),
        ("b", "-", "PRUNED"),
        ("c", "-", "FAILED"),
    ]
