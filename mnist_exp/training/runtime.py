"""This process's training runtime: thread pools, op determinism, seeds, precision policy,
and what the configured ``auto`` (or capped) settings became.

:func:`prepare_runtime` sets the process up before a model is built or restored; the
:class:`Runtime` it returns names what it got (backend, device, thread pools) as run tags
and, with the compiled model, the values the run trains with
(:meth:`Runtime.settings_that_ran`), so that the logged params state what ran.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

import keras
from omegaconf import DictConfig

from mnist_exp.training.devices import BACKEND_TAG, device_tags


@dataclass(frozen=True)
class Runtime:
    """What this process trains on: the Keras backend, the device and TensorFlow's pools."""

    backend: str
    device: dict[str, str]  # device.kind (cpu, gpu) and device.name, see device_tags
    threads: dict[str, int]  # TensorFlow's intra_op and inter_op pools; {} on JAX

    def tags(self) -> dict[str, str]:
        """The runtime as run tags: ``keras.backend``, ``device.*`` and ``threads.*``."""
        return {
            BACKEND_TAG: self.backend,
            **self.device,
            **{f"threads.{pool}": str(count) for pool, count in self.threads.items()},
        }

    def settings_that_ran(self, train_cfg: DictConfig, model: keras.Model) -> dict[str, Any]:
        """The ``train.*`` settings that code resolves before training, as they ran, keyed
        like the flattened config: the backend (``auto`` resolved), steps per execution as
        the compiled ``model`` has them (``auto`` chosen, a number capped at an epoch), the
        device ``auto`` picked, and the thread pools TensorFlow was given (0: its own
        default). The thread settings do not apply on JAX (no such pools): there they stay
        as configured."""
        return {
            "train.backend": self.backend,
            "train.steps_per_execution": int(model.steps_per_execution),
            "train.device": self.device["device.kind"],
            "train.intra_op_threads": self.threads.get("intra_op", train_cfg.intra_op_threads),
            "train.inter_op_threads": self.threads.get("inter_op", train_cfg.inter_op_threads),
        }


def prepare_runtime(train_cfg: DictConfig, seed: int, parallel_jobs: int = 1) -> Runtime:
    """Set this process up to train: on JAX keep TensorFlow out, on TensorFlow size the
    thread pools (:func:`_configure_threads`) and switch on op determinism if configured;
    then seed Python, NumPy and Keras with ``seed`` and set the precision policy."""
    backend = keras.backend.backend()
    if backend == "jax":
        from mnist_exp.training.jax_epochs import keep_tensorflow_out

        keep_tensorflow_out()
    threads = _configure_threads(train_cfg, parallel_jobs) if backend == "tensorflow" else {}
    if train_cfg.deterministic and backend == "tensorflow":
        import tensorflow as tf

        tf.config.experimental.enable_op_determinism()
    keras.utils.set_random_seed(seed)
    keras.mixed_precision.set_global_policy(train_cfg.precision)
    return Runtime(backend=backend, device=device_tags(backend), threads=threads)


def _configure_threads(train_cfg: DictConfig, parallel_jobs: int) -> dict[str, int]:
    """Set TensorFlow's thread pools so that parallel jobs x threads ~ cores.

    0 means automatic: TensorFlow's own default for a job alone; with N parallel jobs,
    cores // N intra-op threads and 1 inter-op thread. A reused worker process keeps the
    pools it started with (TensorFlow cannot change them once running). Returns the pools
    in effect. Only for the TensorFlow backend: on JAX these pools do not exist.
    """
    import tensorflow as tf

    cores = os.cpu_count() or 1
    parallel = parallel_jobs > 1
    intra = train_cfg.intra_op_threads or (max(1, cores // parallel_jobs) if parallel else 0)
    inter = train_cfg.inter_op_threads or (1 if parallel else 0)
    try:
        tf.config.threading.set_intra_op_parallelism_threads(intra)
        tf.config.threading.set_inter_op_parallelism_threads(inter)
    except RuntimeError:
        pass  # already initialised in this process
    return {
        "intra_op": tf.config.threading.get_intra_op_parallelism_threads(),
        "inter_op": tf.config.threading.get_inter_op_parallelism_threads(),
    }
