"""The config layer: the schema of every key, its validation, and the allowed Hydra targets."""
