"""mnist-exp: config-driven MNIST experiments with Hydra, Keras and MLflow."""

import os

# Quiet TensorFlow's C++ start-up chatter; must be set before TensorFlow is imported.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
