"""Library chatter kept off the terminal at its source (mnist_exp.quiet); the real CLI's
stderr is checked in tests/cli/test_commands.py."""

from __future__ import annotations

import logging
import os
import sys

from mnist_exp import quiet


def test_tensorflow_import_lines_are_dropped_and_anything_else_kept(capfd):
    with quiet.native_noise_filtered():
        os.write(2, b"WARNING: All log messages before absl::InitializeLog() is called are ")
        os.write(2, b"written to STDERR\nI0000 port.cc:153] oneDNN custom operations are on.\n")
        os.write(2, b"E0000 something real went wrong\n")
    assert capfd.readouterr().err == "E0000 something real went wrong\n"


def test_the_retracing_warning_is_dropped_other_tensorflow_warnings_kept(caplog):
    quiet.install()
    logger = logging.getLogger("tensorflow")
    with caplog.at_level(logging.WARNING, logger="tensorflow"):
        logger.warning("5 out of the last 5 calls to <f> triggered tf.function retracing.")
        logger.warning("a warning worth reading")
    assert [record.getMessage() for record in caplog.records] == ["a warning worth reading"]


def test_mlflow_registry_notes_are_dropped(capsys):
    with quiet.registry_notes_filtered():
        print("Successfully registered model 'best'.", file=sys.stderr)
        print("Created version '1' of model 'best'.", file=sys.stderr)
        print("WARNING: something else", file=sys.stderr)
    assert capsys.readouterr().err == "WARNING: something else\n"
