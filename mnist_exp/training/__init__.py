"""The training layer: model builder, fit, checkpoints, backend and device, the JAX epoch path."""
