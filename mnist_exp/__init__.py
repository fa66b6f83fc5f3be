"""mnist-exp: config-driven MNIST experiments with Hydra, Keras and MLflow."""

import os
import secrets
import time

from omegaconf import OmegaConf

# When this package was first imported: the reference for "seconds from launch to training".
STARTED_AT = time.perf_counter()

# Quiet TensorFlow's C++ start-up chatter (must be set before TensorFlow is imported) and
# MLflow's download progress bars, which would bury this tool's one-line messages.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")

# ${uid:} in conf/: a random id, resolved once per config (Hydra copies the cache to every
# job of a sweep), so that runs and sweeps started in the same second get folders of their
# own. 48 random bits: a clash is as likely as two runs guessing the same 12 hex digits.
if not OmegaConf.has_resolver("uid"):
    OmegaConf.register_new_resolver("uid", lambda: secrets.token_hex(6), use_cache=True)
