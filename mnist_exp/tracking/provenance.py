"""Where a training run's code came from, in MLflow's own tag names: the git commit, branch
and ``origin`` URL of the checkout the package runs from, whether its tree had uncommitted
changes (``git.dirty``) and what they were (the ``code/git.diff`` artifact), and the
installed versions of the stack (the ``environment/requirements.txt`` artifact).

Git is asked at most three short questions, each with a time limit, and any failure (no
git, not a checkout, a timeout) just leaves the git tags out: provenance never fails a run.
:func:`source_provenance` reads it once per process, since the code a process runs is
imported once; :meth:`~mnist_exp.tracking.recorder.RunRecorder.log_provenance` writes it.
"""

from __future__ import annotations

import platform
import subprocess
from dataclasses import dataclass
from functools import cache
from importlib import metadata
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

COMMIT_TAG = "mlflow.source.git.commit"
BRANCH_TAG = "mlflow.source.git.branch"
REPO_URL_TAG = "mlflow.source.git.repoURL"
DIRTY_TAG = "git.dirty"
DIFF_ARTIFACT = "code/git.diff"
REQUIREMENTS_ARTIFACT = "environment/requirements.txt"

DIFF_LIMIT_BYTES = 1_000_000  # the whole code/git.diff, its closing note included
GIT_TIMEOUT_S = 5  # per git command; a checkout answers in milliseconds
SOURCE_FOLDER = Path(__file__).resolve().parents[1]  # the package's own source

# The stack, as requirements.txt lists it: per line, the distributions that can provide it
# (the first one installed is listed; none installed, no line).
STACK = (
    ("mnist-exp",),
    ("keras",),
    ("tensorflow-cpu", "tensorflow"),
    ("jax",),
    ("jaxlib",),
    ("mlflow",),
    ("hydra-core",),
    ("omegaconf",),
    ("numpy",),
    ("optuna",),
)


@dataclass(frozen=True)
class Provenance:
    """What a run records about its code and environment."""

    tags: dict[str, str]  # the git tags; none when the code is not in a git checkout
    diff: str | None  # the text of code/git.diff; None unless the tree is dirty
    requirements: str  # the text of environment/requirements.txt


@cache
def source_provenance() -> Provenance:
    """The provenance of the package this process runs (:func:`read_provenance` of its
    source folder), read on the first call and kept for the process."""
    return read_provenance(SOURCE_FOLDER)


def read_provenance(folder: Path) -> Provenance:
    """The provenance of code in ``folder``: its checkout's git tags and uncommitted diff
    (see the module's description), and the stack's installed versions."""
    tags, diff = _git_record(folder)
    return Provenance(tags=tags, diff=diff, requirements=requirements_text())


def requirements_text() -> str:
    """``environment/requirements.txt``: a ``# python X.Y.Z`` line, then ``name==version``
    for each installed package of the stack (:data:`STACK`)."""
    lines = [f"# python {platform.python_version()}", *pinned_versions(STACK)]
    return "\n".join(lines) + "\n"


def pinned_versions(stack: tuple[tuple[str, ...], ...]) -> list[str]:
    """``name==version`` for each entry of ``stack`` (alternative distribution names, the
    first installed one wins); entries with none installed are left out."""
    pinned = []
    for names in stack:
        for name in names:
            try:
                pinned.append(f"{name}=={metadata.version(name)}")
                break
            except metadata.PackageNotFoundError:
                continue
    return pinned


def _git_record(folder: Path) -> tuple[dict[str, str], str | None]:
    """The git tags of the checkout holding ``folder`` and, when its tree is dirty, the
    text of its diff; no tags (and no diff) if git cannot tell."""
    # Paths relative to the checkout's top, whatever the user's status.relativePaths.
    status = _git(folder, "-c", "status.relativePaths=false", "status", "--porcelain=v2", "-b")
    if status is None:
        return {}, None
    headers: dict[str, str] = {}
    changed, untracked = False, []
    for line in status.decode(errors="replace").splitlines():
        if line.startswith("# "):
            key, _, value = line[2:].partition(" ")
            headers[key] = value
        elif line.startswith("? "):
            untracked.append(line[2:])
        elif line:
            changed = True
    commit = headers.get("branch.oid", "(initial)")
    if commit == "(initial)":
        return {}, None  # a repository without a commit: nothing to point at
    tags = {COMMIT_TAG: commit}
    if headers.get("branch.head", "(detached)") != "(detached)":
        tags[BRANCH_TAG] = headers["branch.head"]
    remote = _git(folder, "remote", "get-url", "origin")
    if remote and remote.strip():
        tags[REPO_URL_TAG] = _without_credentials(remote.decode(errors="replace").strip())
    dirty = changed or bool(untracked)
    diff = _diff_text(folder, untracked) if dirty else None
    if dirty and diff is None:
        return tags, None  # dirty, but git could not say how: leave git.dirty out
    tags[DIRTY_TAG] = "true" if dirty else "false"
    return tags, diff


def _diff_text(folder: Path, untracked: list[str]) -> str | None:
    """``git diff HEAD`` (which ``git apply`` takes as is) after a comment listing the
    untracked files, cut to :data:`DIFF_LIMIT_BYTES` with a closing note when longer;
    None if git fails."""
    diff = _git(folder, "diff", "--no-color", "--no-ext-diff", "HEAD")
    if diff is None:
        return None
    listed = [f"#   {path}" for path in untracked]
    header = "\n".join(["# untracked files (not in the diff):", *listed, ""]) if listed else ""
    whole = header.encode() + diff
    if len(whole) <= DIFF_LIMIT_BYTES:
        return whole.decode(errors="replace")
    note = f"# cut at {DIFF_LIMIT_BYTES:,} bytes: the whole diff is {len(whole):,} bytes\n"
    kept = whole[: DIFF_LIMIT_BYTES - len(note.encode())]
    kept = kept[: kept.rfind(b"\n") + 1]  # whole lines only
    return kept.decode(errors="ignore") + note


def _git(folder: Path, *args: str) -> bytes | None:
    """The output of ``git ARGS`` run in ``folder``, or None if it failed or took longer
    than :data:`GIT_TIMEOUT_S`. It takes no optional lock: a user's git command never
    waits for a run's."""
    try:
        done = subprocess.run(
            ["git", "--no-optional-locks", *args],
            cwd=folder,
            stdin=subprocess.DEVNULL,
            capture_output=True,
            timeout=GIT_TIMEOUT_S,
            check=True,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return done.stdout


def _without_credentials(url: str) -> str:
    """``url`` without a user name or password (an access token) in an http(s) URL."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or "@" not in parts.netloc:
        return url
    return urlunsplit(parts._replace(netloc=parts.netloc.rpartition("@")[2]))
