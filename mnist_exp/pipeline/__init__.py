"""The pipeline layer: one run end to end, evaluation, the sweep callback, resume."""
