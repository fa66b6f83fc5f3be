"""Load a logged model without running anything a model folder brings along.

A model folder is code-adjacent: MLflow's Keras flavor alone can restore a TensorFlow
SavedModel (``save_exported_model: true``), whose graph runs whatever ops it holds when it is
called, and other flavors unpickle Python objects. :func:`load_model` therefore accepts only
the project's own format, the one
:meth:`mnist_exp.tracking.recorder.RunRecorder.log_model` writes: an ``MLmodel`` file whose
``keras`` flavor points at a native ``.keras`` archive inside the folder, loaded with Keras
safe mode on. ``MLmodel`` is read with ``yaml.safe_load``; nothing else in the
folder is read, imported or deserialized before it passes these checks. Anything else raises
:class:`ModelRefused`, one line naming the model and what is allowed.
"""

from __future__ import annotations

import os
import re
import stat
import zipfile
from pathlib import Path, PurePosixPath, PureWindowsPath
from typing import TYPE_CHECKING, Any
from urllib.parse import urlparse
from urllib.request import url2pathname

import yaml

from mnist_exp.config.schema import ConfigError
from mnist_exp.tracking.store import absolute_store_uri, store_errors
from mnist_exp.tracking.stored_runs import RUN_ID

if TYPE_CHECKING:
    import keras
    from mlflow import MlflowClient

MLMODEL = "MLmodel"
FLAVOR = "keras"
KERAS_SUFFIX = ".keras"
# What mlflow.keras.save_model writes (MLflow 3.17): flavor field ``data: data`` and the model
# at ``<data>/model.keras``; loaders treat a missing ``data`` as ``model`` and, when ``<data>``
# is a folder, look for ``<data>/model`` + ``.keras`` inside it. The same rule is used here.
DEFAULT_DATA = "model"
MODEL_STEM = "model"
MAX_MLMODEL_BYTES = 1 << 20  # MLflow writes a few KB; a bigger file is not one of ours
ALLOWED = (
    "only the project's own format loads (MLflow keras flavor with a native .keras file, "
    "loaded in Keras safe mode)"
)


class ModelRefused(ConfigError):
    """A model reference that is not in the project's own format; nothing of it was run.

    The message is one line naming the model URI or path, what is allowed and what was found.
    """


def run_model_uri(run_id: str) -> str:
    """The URI of the model that run ``run_id`` logged: ``runs:/<id>/model``."""
    return f"runs:/{run_id}/model"


def logged_model_uri(client: MlflowClient, run_id: str) -> str:
    """``models:/<model id>`` of the model run ``run_id`` logged last: what registering
    it takes (``runs:/<id>/model`` makes MLflow warn that the run has no such artifact
    path); ``runs:/<id>/model`` for a run that records no logged model."""
    run = client.get_run(run_id)
    outputs = run.outputs.model_outputs if run.outputs else []
    return f"models:/{outputs[-1].model_id}" if outputs else run_model_uri(run_id)


def model_uri(reference: str) -> str:
    """``runs:/<id>/model`` for a bare run id; any other reference as it is."""
    return run_model_uri(reference) if RUN_ID.fullmatch(reference) else reference


def load_model_from_store(uri: str, tracking_uri: str) -> keras.Model:
    """:func:`load_model` with MLflow URIs looked up in the store at ``tracking_uri``.

    A model that cannot be had (no such run or version, a missing path) is a ConfigError,
    ``cannot load model URI: why``; a store that cannot be read is a StoreError. Both
    are one line.
    """
    import mlflow

    try:
        with store_errors(absolute_store_uri(tracking_uri)):
            return load_model(uri, tracking_uri)
    except (mlflow.exceptions.MlflowException, OSError) as error:
        raise ConfigError(f"cannot load model {uri}: {str(error).splitlines()[0]}") from None


def load_model(uri: str, tracking_uri: str | None = None) -> keras.Model:
    """Load a Keras model logged by this project, refusing any other kind of model.

    ``uri`` is ``runs:/<id>/model``, ``models:/<name>/<version>`` (or ``@alias``), any other
    MLflow artifact URI (downloaded from the store at ``tracking_uri``, by default the one
    MLflow is set to), a local MLflow model folder (one holding ``MLmodel``), or a local
    native ``.keras`` file.

    Raises ModelRefused (a ConfigError) if it is anything else: another flavor only, an
    exported TensorFlow SavedModel, a missing or non-``.keras`` model file, a folder without
    ``MLmodel``, or a model path that leaves the folder. Download failures (unknown run or
    model) propagate as MLflow raises them; a missing local path raises FileNotFoundError.
    """
    uri = str(uri)
    local = _local_path(uri)
    if local is not None:
        if not os.path.lexists(local):
            raise FileNotFoundError(f"{_shown(uri)}: no such file or folder")
        return _load_local(uri, local)

    import tempfile

    import mlflow

    if tracking_uri is not None:
        mlflow.set_tracking_uri(absolute_store_uri(tracking_uri))
    with tempfile.TemporaryDirectory(prefix="mnist-exp-model-") as folder:
        downloaded = mlflow.artifacts.download_artifacts(artifact_uri=uri, dst_path=folder)
        # The model is fully in memory once loaded; the download can go.
        return _load_local(uri, Path(downloaded))


def _local_path(uri: str) -> Path | None:
    """The filesystem path ``uri`` names (plain path or ``file:`` URI), else None."""
    parsed = urlparse(uri)
    if parsed.scheme == "" or len(parsed.scheme) == 1:  # a plain path, or a Windows drive
        return Path(uri)
    if parsed.scheme == "file" and parsed.netloc in ("", "localhost"):
        return Path(url2pathname(parsed.path))
    return None


def _load_local(uri: str, path: Path) -> keras.Model:
    """Check that ``path`` (a model folder or a ``.keras`` file) is ours, then load it."""
    try:
        mode = os.stat(path).st_mode  # follows a link to what it names
    except OSError as error:
        raise _refused(uri, f"a path that cannot be read ({error.strerror})") from None
    if stat.S_ISDIR(mode):
        return _keras_load(uri, _model_file(uri, path.resolve()))
    if not stat.S_ISREG(mode):
        raise _refused(uri, "something that is neither a folder nor a regular file")
    if path.suffix != KERAS_SUFFIX:
        raise _refused(uri, f"a file that is not a native {KERAS_SUFFIX} file")
    return _keras_load(uri, path.resolve())


def _model_file(uri: str, folder: Path) -> Path:
    """The ``.keras`` file that ``folder``'s ``MLmodel`` points at, or raise ModelRefused."""
    flavors = _read_mlmodel(uri, folder).get("flavors")
    if not isinstance(flavors, dict) or not flavors:
        raise _refused(uri, "an MLmodel without flavors")
    if FLAVOR not in flavors:
        names = ", ".join(repr(str(name)) for name in flavors)
        raise _refused(uri, f"flavor{'s' if len(flavors) > 1 else ''} {names} only")
    options = flavors[FLAVOR]
    if not isinstance(options, dict):
        raise _refused(uri, f"flavor {FLAVOR!r} without its options")
    if options.get("save_exported_model") not in (None, False):
        raise _refused(uri, f"flavor {FLAVOR!r} with a SavedModel (save_exported_model: true)")

    data = options.get("data", DEFAULT_DATA)
    if not isinstance(data, str) or not data:
        raise _refused(uri, f"flavor {FLAVOR!r} with data {data!r}, not a relative path")
    relative = PurePosixPath(data.replace("\\", "/"))
    if (
        relative.is_absolute()
        or PureWindowsPath(data).drive
        or PureWindowsPath(data).root
        or ".." in relative.parts
    ):
        raise _refused(uri, f"flavor {FLAVOR!r} with data {data!r}, a path outside the folder")
    target = folder.joinpath(*relative.parts)
    if target.is_dir():
        if any((where / "saved_model.pb").exists() for where in (target, target / MODEL_STEM)):
            raise _refused(uri, f"flavor {FLAVOR!r} with a SavedModel in {data!r}")
        target = target / MODEL_STEM
    model_file = target.with_name(target.name + KERAS_SUFFIX)
    shown = model_file.relative_to(folder).as_posix()
    if not os.path.lexists(model_file):
        raise _refused(uri, f"flavor {FLAVOR!r} without its .keras file ({shown} is missing)")
    resolved = model_file.resolve()
    if not resolved.is_relative_to(folder):
        raise _refused(uri, f"flavor {FLAVOR!r} whose {shown} links outside the folder")
    if not resolved.is_file():
        raise _refused(uri, f"flavor {FLAVOR!r} whose {shown} is not a regular file")
    return resolved


def _read_mlmodel(uri: str, folder: Path) -> dict[str, Any]:
    """``folder/MLmodel`` parsed with ``yaml.safe_load`` (a mapping), or raise ModelRefused."""
    path = folder / MLMODEL
    if not os.path.lexists(path):
        raise _refused(uri, f"a folder without an {MLMODEL} file")
    resolved = path.resolve()
    if not resolved.is_relative_to(folder) or not resolved.is_file():
        raise _refused(uri, f"an {MLMODEL} that is not a regular file in the folder")
    if resolved.stat().st_size > MAX_MLMODEL_BYTES:
        raise _refused(uri, f"an {MLMODEL} file over {MAX_MLMODEL_BYTES} bytes")
    try:
        document = yaml.safe_load(resolved.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as error:
        reason = str(error).splitlines()[0] if str(error) else type(error).__name__
        raise _refused(uri, f"an {MLMODEL} that is not readable YAML ({reason})") from None
    if not isinstance(document, dict):
        raise _refused(uri, f"an {MLMODEL} that is not a YAML mapping")
    return document


def _keras_load(uri: str, model_file: Path) -> keras.Model:
    """Load a checked ``.keras`` archive in Keras safe mode; refuse what safe mode refuses."""
    if not zipfile.is_zipfile(model_file):
        raise _refused(uri, f"a {model_file.name} that is not a .keras archive")
    import keras

    try:
        return keras.saving.load_model(model_file, compile=True, safe_mode=True)
    except Exception as error:  # safe-mode refusals, unknown classes, corrupt archives
        reason = " ".join(str(error).split())[:300] or type(error).__name__
        found = f"a .keras file that Keras safe mode does not load ({reason})"
        raise _refused(uri, found) from None


def _shown(uri: str) -> str:
    """``uri`` as it appears in a one-line message (quoted if it holds control characters)."""
    return ascii(uri) if re.search(r"[\x00-\x1f\x7f]", uri) else uri


def _refused(uri: str, found: str) -> ModelRefused:
    """The one-line refusal for ``uri``: what is allowed and what was found instead."""
    return ModelRefused(f"model_uri={_shown(uri)}: refused: {ALLOWED}; found {found}")
