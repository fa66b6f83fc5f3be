"""mnist-exp: config-driven MNIST experiments with Hydra, Keras and MLflow."""

import os
import time

# When this package was first imported: the reference for "seconds from launch to training".
STARTED_AT = time.perf_counter()

# Quiet TensorFlow's C++ start-up chatter (must be set before TensorFlow is imported) and
# MLflow's download progress bars, which would bury this tool's one-line messages.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
