"""``python -m mnist_exp.predict MODEL IMAGE ...``: classify image files.

The code is in :mod:`mnist_exp.cli.predict`; this module keeps the command's name.
"""

from mnist_exp.cli.predict import main

if __name__ == "__main__":
    raise SystemExit(main())
