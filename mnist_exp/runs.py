"""``python -m mnist_exp.runs gc``: close runs whose process is gone.

The code is in :mod:`mnist_exp.cli.runs`; this module keeps the command's name.
"""

from mnist_exp.cli.runs import main

if __name__ == "__main__":
    raise SystemExit(main())
