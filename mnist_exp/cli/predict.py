"""``python -m mnist_exp.predict MODEL IMAGE [IMAGE ...] [--json | --request]``

Classifies image files (PNG/JPEG, any size, colour or grayscale, either polarity) with a
logged model, after the same preprocessing as MNIST itself (28x28 grayscale, white digit
on black, centred). A bad file gets one line on stderr and a non-zero exit; the other
files are still predicted. ``--request`` prints the JSON body that MLflow's model server
expects for these images instead.
"""

from __future__ import annotations

import argparse
import json
import os
import sys

import numpy as np

from mnist_exp.data.images import load_digits
from mnist_exp.errors import EXIT_BAD_CONFIG, EXIT_RUN_FAILED
from mnist_exp.tracking.model_loading import ModelRefused, load_model, model_uri
from mnist_exp.tracking.store import DEFAULT_STORE


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    """The command line: model, images and output mode."""
    parser = argparse.ArgumentParser(
        prog="python -m mnist_exp.predict",
        description="Classify digit images with a logged model.",
    )
    parser.add_argument(
        "model", help="a run id, runs:/<id>/model, models:/<name>/<version>, or a model folder"
    )
    parser.add_argument("images", nargs="+", help="image files (PNG, JPEG, ...)")
    output = parser.add_mutually_exclusive_group()
    output.add_argument("--json", action="store_true", help="print results as JSON")
    output.add_argument(
        "--request", action="store_true", help="print a serving request body, do not predict"
    )
    parser.add_argument(
        "--tracking-uri",
        default=os.environ.get("MLFLOW_TRACKING_URI", DEFAULT_STORE),
        help=f"MLflow store holding the model (default: $MLFLOW_TRACKING_URI or {DEFAULT_STORE})",
    )
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    """Predict (or build a request for) every readable image; return the exit code."""
    args = parse_args(argv)
    inputs, failures = load_digits(args.images)
    for _, message in failures:
        print(f"error: {message}", file=sys.stderr)
    failed = {path for path, _ in failures}
    good = [path for path in args.images if path not in failed]
    if args.request:
        print(json.dumps({"inputs": inputs.round(4).tolist()}))
        return EXIT_RUN_FAILED if failures else 0
    results: dict[str, dict] = {
        path: {"file": path, "error": message} for path, message in failures
    }
    if good:
        try:
            probabilities = _predict(model_uri(args.model), args.tracking_uri, inputs)
        except ModelRefused as error:
            print(f"error: {error}", file=sys.stderr)
            return EXIT_BAD_CONFIG
        except Exception as error:  # MLflow raises many kinds; the message is what matters
            print(
                f"error: cannot load model {args.model!r}: {_first_line(error)}",
                file=sys.stderr,
            )
            return EXIT_BAD_CONFIG
        for path, row in zip(good, probabilities, strict=True):
            digit = int(row.argmax())
            results[path] = {
                "file": path,
                "digit": digit,
                "probability": round(float(row[digit]), 6),
                "probabilities": [round(float(p), 6) for p in row],
            }
    ordered = [results[path] for path in args.images]
    if args.json:
        print(json.dumps(ordered, indent=2))
    else:
        for result in ordered:
            if "digit" in result:
                print(f"{result['file']}: {result['digit']} (p={result['probability']:.3f})")
    return EXIT_RUN_FAILED if failures else 0


def _first_line(error: Exception) -> str:
    """The first line of ``error``'s message, or its type's name when it has none."""
    return (str(error).splitlines() or [type(error).__name__])[0]


def _predict(uri: str, tracking_uri: str, inputs: np.ndarray) -> np.ndarray:
    """Class probabilities of ``inputs`` by the model at ``uri`` (MLflow URIs looked up in
    the store at ``tracking_uri``); only the project's own format loads, checked before
    Keras reads it."""
    model = load_model(uri, tracking_uri)  # Keras loads only once the model passed
    from mnist_exp.training.inference import predict_probabilities

    return predict_probabilities(model, inputs)
