"""Benchmarks: each module times real runs of this project in one sitting and reports ratios."""
