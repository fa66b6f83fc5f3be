"""Predict class probabilities with a trained model."""

from __future__ import annotations

import keras
import numpy as np

PREDICT_BATCH = 1024  # validation and test batches: no gradients to keep, so large


def predict_probabilities(model: keras.Model, images: np.ndarray) -> np.ndarray:
    """Class probabilities for ``images``, in large batches (no gradients to keep)."""
    return np.asarray(model.predict(images, batch_size=PREDICT_BATCH, verbose=0))
