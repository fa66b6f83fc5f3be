"""Which Keras backend and which device a run trains on, chosen before Keras is imported.

``train.backend`` picks Keras's backend; ``train.device`` (auto, cpu, gpu) the device. Only
JAX can use a GPU here: the TensorFlow package this project installs is CPU-only. The
device a run trained on is tagged on it (:func:`device_tags`).
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


def select_backend(train_cfg: DictConfig, parallel_jobs: int = 1) -> None:
    """Point Keras at ``train.backend`` and JAX at ``train.device``; it must happen before
    Keras is first imported. A device that cannot be had is a one-line ConfigError."""
    backend, device = train_cfg.backend, train_cfg.device
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


def device_tags(backend: str) -> dict[str, str]:
    """The kind (cpu, gpu) and name of the device this run trains on, as run tags."""
    if backend == "jax":
        import jax

        device = jax.devices()[0]
        return {"device.kind": device.platform, "device.name": device.device_kind}
    return {"device.kind": "cpu", "device.name": platform.processor() or platform.machine()}
