"""``python -m mnist_exp.evaluate run_id=<id> | model_uri=<URI>``: re-evaluate a logged model.

The code is in :mod:`mnist_exp.cli.evaluate`; this module keeps the command's name.
"""

from mnist_exp.cli.evaluate import main

if __name__ == "__main__":
    raise SystemExit(main())
