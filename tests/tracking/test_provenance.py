"""Provenance read from real git repositories in temp folders: MLflow's git tags,
``git.dirty``, the uncommitted diff (cut at 1 MB) and the stack's installed versions."""

from __future__ import annotations

import platform
import subprocess
from importlib import metadata
from pathlib import Path

import pytest

from mnist_exp.tracking.provenance import (
    BRANCH_TAG,
    COMMIT_TAG,
    DIFF_LIMIT_BYTES,
    DIRTY_TAG,
    REPO_URL_TAG,
    read_provenance,
    requirements_text,
)


def git(repo: Path, *args: str) -> str:
    """Run ``git ARGS`` in ``repo`` as a test user; return its output."""
    done = subprocess.run(
        ["git", "-c", "user.name=Test", "-c", "user.email=test@example.com", *args],
        cwd=repo,
        capture_output=True,
        text=True,
        check=True,
    )
    return done.stdout.strip()


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    """A git repository on branch ``main`` with one commit (``train.py`` and a package
    folder ``pkg/``) and an ``origin`` whose URL holds an access token."""
    root = tmp_path / "checkout"
    (root / "pkg").mkdir(parents=True)
    (root / "train.py").write_text("epochs = 1\n")
    (root / "pkg" / "model.py").write_text("units = 128\n")
    git(root, "init", "--quiet", "--initial-branch=main")
    git(root, "add", ".")
    git(root, "commit", "--quiet", "-m", "first")
    git(root, "remote", "add", "origin", "https://alice:s3cret@git.example.com/team/mnist.git")
    return root


def test_a_clean_checkout_gets_mlflows_git_tags_and_no_diff(repo):
    provenance = read_provenance(repo / "pkg")  # the package's folder, below the checkout's top
    assert provenance.tags == {
        COMMIT_TAG: git(repo, "rev-parse", "HEAD"),
        BRANCH_TAG: "main",
        REPO_URL_TAG: "https://git.example.com/team/mnist.git",  # the token left out
        DIRTY_TAG: "false",
    }
    assert provenance.diff is None


def test_a_dirty_checkout_records_its_diff_and_untracked_files(repo):
    (repo / "train.py").write_text("epochs = 5\n")
    (repo / "pkg" / "new_layer.py").write_text("dropout = 0.3\n")
    provenance = read_provenance(repo / "pkg")
    assert provenance.tags[DIRTY_TAG] == "true"
    assert provenance.tags[COMMIT_TAG] == git(repo, "rev-parse", "HEAD")
    diff = provenance.diff
    assert diff.startswith("# untracked files (not in the diff):\n#   pkg/new_layer.py\n")
    assert "-epochs = 1\n+epochs = 5\n" in diff
    # The artifact is a patch git takes as is: reversed, it undoes exactly the changes.
    patch = repo.parent / "git.diff"
    patch.write_text(diff)
    git(repo, "apply", "--check", "--reverse", str(patch))


def test_a_diff_over_1_mb_is_cut_with_a_note_saying_how_big_it_was(repo):
    lines = "".join(f"line {n:07d} of a generated table\n" for n in range(70_000))
    (repo / "train.py").write_text(lines)  # about 2.4 MB of added lines
    diff = read_provenance(repo).diff
    size = len(subprocess.run(["git", "diff", "HEAD"], cwd=repo, capture_output=True).stdout)
    assert size > 2 * DIFF_LIMIT_BYTES
    assert len(diff.encode()) <= DIFF_LIMIT_BYTES
    body, note = diff.rstrip("\n").rsplit("\n", 1)
    assert note == f"# cut at 1,000,000 bytes: the whole diff is {size:,} bytes"
    assert body.endswith(" of a generated table")  # cut between lines, not inside one
    assert len(diff.encode()) > DIFF_LIMIT_BYTES - 100


def test_a_detached_head_without_origin_gets_only_the_commit_and_dirty_tags(repo):
    git(repo, "remote", "remove", "origin")
    git(repo, "checkout", "--quiet", "--detach")
    assert set(read_provenance(repo).tags) == {COMMIT_TAG, DIRTY_TAG}


def test_no_checkout_or_no_git_gives_no_git_tags(tmp_path, repo, monkeypatch):
    outside = tmp_path / "not_a_checkout"
    outside.mkdir()
    assert (read_provenance(outside).tags, read_provenance(outside).diff) == ({}, None)
    git(repo, "init", "--quiet", str(tmp_path / "no_commit_yet"))
    assert read_provenance(tmp_path / "no_commit_yet").tags == {}
    monkeypatch.setenv("PATH", str(tmp_path / "no_programs_here"))  # git not found
    assert read_provenance(repo).tags == {}


def test_requirements_pin_the_installed_stack_after_the_python_version():
    first, *pins = requirements_text().splitlines()
    assert first == f"# python {platform.python_version()}"
    versions = dict(pin.split("==") for pin in pins)
    for name in ("mnist-exp", "keras", "jax", "mlflow", "hydra-core", "omegaconf", "numpy"):
        assert versions[name] == metadata.version(name)
    # One TensorFlow distribution, whichever is installed.
    assert len({"tensorflow-cpu", "tensorflow"} & set(versions)) == 1
