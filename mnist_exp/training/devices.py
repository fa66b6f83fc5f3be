"""Which Keras backend and which device a run trains on, chosen before Keras is imported.

``train.backend`` picks Keras's backend (``auto``, the default: the one measured fastest
for the model and device, :func:`resolve_backend`); ``train.device`` (auto, cpu, gpu) the
device. Only JAX can use a GPU here: the TensorFlow package this project installs is
CPU-only. The backend and device a run trained on are tagged on it (:func:`device_tags`).
"""

from __future__ import annotations

import importlib.util
import os
import platform
import sys
from pathlib import Path

from omegaconf import DictConfig

from mnist_exp.config.schema import ConfigError

GPU_EXTRA = "pip install -e '.[gpu]'"


def gpu_visible() -> bool:
    """Whether this machine shows an NVIDIA GPU (its driver lists one), without importing
    any framework."""
    gpus = Path("/proc/driver/nvidia/gpus")
    return gpus.is_dir() and any(gpus.iterdir())


# The faster backend on a CPU per model type, measured on the 2-core reference machine
# (docs/speed.md has the table); on a GPU only JAX can use it. With augmented images
# (data.augment) TensorFlow: JAX compiles the random image layers into its epoch slowly.
FASTEST_ON_CPU = {"mlp": "jax", "cnn": "tensorflow"}
FASTEST_ON_CPU_AUGMENTED = "tensorflow"


def resolve_backend(backend: str, device: str, model_type: str, augment: bool = False) -> str:
    """The Keras backend that ``train.backend=backend`` means for this model and device.

    ``auto`` picks, in this order: the backend Keras already runs on in this process (a
    sequential sweep's later jobs: Keras cannot switch); TensorFlow when JAX is not
    installed; JAX when the run may use a GPU (``train.device`` gpu, or auto with one
    visible); else the backend measured fastest on a CPU for ``model_type``
    (:data:`FASTEST_ON_CPU`), or for augmented images. A named backend is returned as it
    is.
    """
    if backend != "auto":
        return backend
    keras = sys.modules.get("keras")
    if keras is not None:
        return keras.backend.backend()
    if importlib.util.find_spec("jax") is None:
        return "tensorflow"
    if device == "gpu" or (device == "auto" and gpu_visible()):
        return "jax"
    return FASTEST_ON_CPU_AUGMENTED if augment else FASTEST_ON_CPU[model_type]


def select_backend(
    train_cfg: DictConfig, model_type: str, augment: bool = False, parallel_jobs: int = 1
) -> None:
    """Point Keras at the backend ``train.backend`` resolves to for ``model_type`` and
    ``augment`` (:func:`resolve_backend`) and JAX at ``train.device``; it must happen
    before Keras is first imported. A device that cannot be had is a one-line
    ConfigError."""
    device = train_cfg.device
    backend = resolve_backend(train_cfg.backend, device, model_type, augment)
    keras = sys.modules.get("keras")
    if keras is not None and keras.backend.backend() != backend:
        raise ConfigError(
            f"train.backend={backend}: this process already runs Keras on "
            f"{keras.backend.backend()}; run it in a process of its own"
        )
    if backend == "jax":
        if importlib.util.find_spec("jax") is None:
            raise ConfigError('train.backend=jax: JAX is not installed; pip install -e ".[jax]"')
        # JAX's persistent compilation cache: a repeated config skips XLA compilation
        # (about 2 s per run here). JAX's own variables override these defaults.
        cache = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "mnist_exp"
        os.environ.setdefault("JAX_COMPILATION_CACHE_DIR", str(cache / "jax"))
        os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0")
        if parallel_jobs > 1:  # share one GPU: allocate as needed, not 75 % each
            os.environ.setdefault("XLA_PYTHON_CLIENT_PREALLOCATE", "false")
        if device == "cpu":
            os.environ["JAX_PLATFORMS"] = "cpu"
        elif device == "gpu":
            _require_jax_gpu()
        if train_cfg.deterministic and device != "cpu" and gpu_visible():
            flags = os.environ.get("XLA_FLAGS", "")
            os.environ["XLA_FLAGS"] = f"{flags} --xla_gpu_deterministic_ops=true".strip()
    elif device == "gpu":
        raise ConfigError(
            "train.device=gpu: the TensorFlow backend here is CPU-only (tensorflow-cpu); "
            f"train on the GPU with train.backend=jax ({GPU_EXTRA})"
        )
    elif device == "auto" and gpu_visible():
        print(
            "hint: a GPU is visible, but the TensorFlow backend here runs on the CPU; "
            f"train.backend=jax uses the GPU ({GPU_EXTRA})",
            file=sys.stderr,
        )
    os.environ["KERAS_BACKEND"] = backend


def _require_jax_gpu() -> None:
    import jax

    try:
        jax.devices("gpu")
    except RuntimeError:
        raise ConfigError(
            "train.device=gpu: JAX sees no GPU here (its devices: "
            f"{', '.join(sorted({d.platform for d in jax.devices()}))}); use train.device=auto "
            f"or cpu, or install CUDA-enabled JAX ({GPU_EXTRA})"
        ) from None


BACKEND_TAG = "keras.backend"  # on every run: the Keras backend it ran on (see runtime.py)


def device_tags(backend: str) -> dict[str, str]:
    """The kind (cpu, gpu) and name of the device this run trains on, as run tags."""
    if backend == "jax":
        import jax

        device = jax.devices()[0]
        return {"device.kind": device.platform, "device.name": device.device_kind}
    return {"device.kind": "cpu", "device.name": platform.processor() or platform.machine()}
