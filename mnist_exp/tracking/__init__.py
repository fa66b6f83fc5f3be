"""The tracking layer: the MLflow store, the run recorder, lineage, logged models and runs."""
