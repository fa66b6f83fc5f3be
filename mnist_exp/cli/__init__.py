"""The command-line layer: thin entry points (Hydra or argparse in, exit code out)."""
