"""The training layer: model builder, runtime set-up, fit, checkpoints, inference, backend and
device, the JAX epoch path."""
