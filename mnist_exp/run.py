"""``python -m mnist_exp.run [overrides]``: one run, or a sweep with ``-m``.

The code is in :mod:`mnist_exp.cli.run`; this module keeps the command's name.
"""

from mnist_exp.cli.run import main

if __name__ == "__main__":
    raise SystemExit(main())
