"""A sweep's progress line: the formatter, the live terminal line, and real sweeps that
print it plainly (off a terminal, and from joblib's workers) or live on a terminal (a
pseudo-terminal here), while a single run prints none."""

from __future__ import annotations

import io
import os
import re
import select
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import AROUND_TRAINING, run_cli
from omegaconf import OmegaConf

from mnist_exp.pipeline.sweep import (
    OPTUNA_SWEEPER,
    ProgressSource,
    read_progress,
    sweep_size,
)
from mnist_exp.results.progress import ERASE_LINE, LiveLine, SweepProgress, clock, progress_line

PLAIN = re.compile(
    r"^sweep progress: (\d+)/(\d+) jobs, (\d+:\d\d) elapsed(?:, ETA (\d+:\d\d))?, "
    r"best final/val_accuracy (\d\.\d{4}) \(job (\d+)\)$",
    flags=re.M,
)
EPOCH_LINE = re.compile(r"^\d+/\d+ - .* - val_loss: [\d.]+$", flags=re.M)  # Keras, verbose=2
JOB_LINE = re.compile(
    r"sweep job \d \(dropout=0\.\d\): test accuracy [\d.]+, val accuracy [\d.]+, 1 epoch, "
    r"run [0-9a-f]{32}"
)


@pytest.mark.parametrize(
    ("seconds", "text"),
    [
        (0, "0:00"),
        (42.4, "0:42"),
        (70, "1:10"),
        (599.6, "10:00"),
        (3600, "1:00:00"),
        (3725, "1:02:05"),
    ],
)
def test_times_read_as_a_clock(seconds, text):
    assert clock(seconds) == text


def test_a_progress_line_has_jobs_elapsed_eta_and_the_best_so_far():
    progress = SweepProgress(done=3, total=8, elapsed_s=42, ran=3, best=0.97312, best_job="1")
    assert progress_line(progress) == (
        "sweep progress: 3/8 jobs, 0:42 elapsed, ETA 1:10, best final/val_accuracy 0.9731 (job 1)"
    )


def test_the_eta_needs_a_job_that_ran_and_one_still_to_run():
    first_failed = SweepProgress(done=1, total=4, elapsed_s=9, ran=1, failed=1)
    assert progress_line(first_failed) == (
        "sweep progress: 1/4 jobs (1 failed), 0:09 elapsed, ETA 0:27, no final/val_accuracy yet"
    )
    last = SweepProgress(done=4, total=4, elapsed_s=3725, ran=4, best=0.5, best_job="2")
    assert progress_line(last) == (
        "sweep progress: 4/4 jobs, 1:02:05 elapsed, best final/val_accuracy 0.5000 (job 2)"
    )
    # A continued sweep: 2 jobs skipped (done, instantly), then 1 ran in 10 s, 1 to go.
    skipped = SweepProgress(done=2, total=4, elapsed_s=1, ran=0, best=0.9, best_job="0")
    assert "ETA" not in progress_line(skipped)
    after = SweepProgress(done=3, total=4, elapsed_s=10, ran=1, best=0.9, best_job="0")
    assert ", ETA 0:10, " in progress_line(after)


def test_on_a_terminal_the_line_never_wraps():
    progress = SweepProgress(done=3, total=8, elapsed_s=42, ran=3, best=0.97312, best_job="1")
    plain = progress_line(progress)
    assert progress_line(progress, width=200) == plain
    assert progress_line(progress, width=79) == plain.removeprefix("sweep progress: ")
    assert progress_line(progress, width=30) == "3/8 jobs, 0:42 elapsed, ETA 1:"


def test_a_live_line_stays_last_below_other_output(monkeypatch):
    terminal = io.StringIO()  # not a terminal itself: the live line's caller decides
    monkeypatch.setattr(sys, "stdout", terminal)
    live = LiveLine()
    print("job 0 done")
    live.show("1/2 jobs")
    print("job 1", end="")
    print(" done")
    live.show("2/2 jobs")
    live.close()
    assert sys.stdout is terminal
    print("leaderboard")
    assert terminal.getvalue() == (
        f"job 0 done\n{ERASE_LINE}1/2 jobs{ERASE_LINE}job 1 done\n{ERASE_LINE}1/2 jobs"
        f"{ERASE_LINE}2/2 jobs\nleaderboard\n"
    )
    assert screen(terminal.getvalue()) == [
        "job 0 done",
        "job 1 done",
        "2/2 jobs",
        "leaderboard",
        "",
    ]


def test_a_sweep_counts_its_grid_or_its_trials():
    grid = OmegaConf.create(
        {
            "hydra": {
                "sweeper": {
                    "_target_": "hydra._internal.core_plugins.basic_sweeper.BasicSweeper",
                    "params": {"seed": "1,2,3"},
                },
                "overrides": {"task": ["model.dropout=0.2,0.5", "train.epochs=1"]},
            }
        }
    )
    assert sweep_size(grid) == 6
    study = OmegaConf.create({"hydra": {"sweeper": {"_target_": OPTUNA_SWEEPER, "n_trials": 7}}})
    assert sweep_size(study) == 7


def test_a_store_that_cannot_be_read_gives_no_progress(tmp_path):
    (tmp_path / "a file").touch()
    source = ProgressSource(
        uri=f"sqlite:///{tmp_path / 'a file' / 'mlflow.db'}",
        experiment_id="1",
        parent_run_id="0" * 32,
        started_ms=0,
        total=2,
        launcher_pid=os.getpid(),
    )
    assert read_progress(source) is None


def screen(output: str) -> list[str]:
    """The lines a terminal shows after ``output``: ``\\r`` goes back to the line's start,
    erase-line clears from there, ``\\n`` starts the next line, text overwrites."""
    lines, column = [""], 0
    for token in re.split(r"(\r|\n|\x1b\[K)", output):
        if token == "\r":
            column = 0
        elif token == "\n":
            lines.append("")
            column = 0
        elif token == "\x1b[K":
            lines[-1] = lines[-1][:column]
        elif token:
            lines[-1] = lines[-1][:column] + token + lines[-1][column + len(token) :]
            column += len(token)
    return lines


def sweep_args(tmp_path: Path, store, mnist_npz: Path, *args: str, sweep_dir: str) -> list[str]:
    return [
        "-m",
        *args,
        "train.epochs=1",
        "train.checkpoint=false",
        "tracking.log_model=false",
        AROUND_TRAINING,
        f"data.path={mnist_npz}",
        f"hydra.sweep.dir={tmp_path / sweep_dir}",
        *store.overrides,
    ]


def on_a_terminal(args: list[str], cwd: Path, timeout: float = 300) -> tuple[int, str]:
    """Run ``python -m mnist_exp.run ARGS`` with its stdout on a pseudo-terminal (stderr
    to a file); return its exit code and everything it wrote to the terminal."""
    controller, terminal = os.openpty()
    with open(cwd / "stderr.txt", "w") as stderr:
        process = subprocess.Popen(
            [sys.executable, "-m", "mnist_exp.run", *args],
            cwd=cwd,
            stdin=subprocess.DEVNULL,
            stdout=terminal,
            stderr=stderr,
            env={**os.environ, "COLUMNS": "200"},
        )
    os.close(terminal)
    output = b""
    deadline = time.monotonic() + timeout
    try:
        while select.select([controller], [], [], max(0, deadline - time.monotonic()))[0]:
            chunk = os.read(controller, 65536)
            if not chunk:
                break
            output += chunk
    except OSError:  # Linux: the terminal's last writer is gone
        pass
    finally:
        os.close(controller)
        if time.monotonic() >= deadline:
            process.kill()
    code = process.wait(timeout=60)
    # The terminal turns each \n into \r\n; read it back as the program wrote it.
    return code, output.decode().replace("\r\n", "\n")


def best_so_far(children: list) -> list[tuple[str, str]]:
    """After each of ``children`` (oldest first) ends: the best objective and its job."""
    best, found = None, []
    for child in children:
        value = child.data.metrics["final/val_accuracy"]
        if best is None or value > best[0]:
            best = (value, child.data.tags["sweep.job_num"])
        found.append((f"{best[0]:.4f}", best[1]))
    return found


@pytest.mark.slow
def test_off_a_terminal_each_job_prints_a_plain_line_and_a_continued_sweep_counts_skips(
    tmp_path, store, mnist_npz
):
    grid = ("model.dropout=0.2,0.5,0.3", "train.verbose=0")
    done = run_cli(sweep_args(tmp_path, store, mnist_npz, *grid, sweep_dir="first"), tmp_path)
    assert done.returncode == 0, done.stderr
    assert ERASE_LINE not in done.stdout
    lines = PLAIN.findall(done.stdout)
    assert [(line[0], line[1]) for line in lines] == [("1", "3"), ("2", "3"), ("3", "3")]
    assert [bool(line[3]) for line in lines] == [True, True, False]  # no ETA at the end
    children = store.sweep_children()
    assert [(line[4], line[5]) for line in lines] == best_so_far(children)
    # Each line follows its job's own line, and the leaderboard follows the last one.
    assert re.search(r"^sweep job 2 .*\nsweep progress: 3/3 jobs.*\n\nSweep ", done.stdout, re.M)

    # Run again: every job is skipped, each counted as done, nothing to time.
    again = run_cli(sweep_args(tmp_path, store, mnist_npz, *grid, sweep_dir="again"), tmp_path)
    assert again.returncode == 0, again.stderr
    best = best_so_far(children)[-1]
    again_lines = [
        (n, total, eta, *rest) for n, total, _, eta, *rest in PLAIN.findall(again.stdout)
    ]
    assert again_lines == [("3", "3", "", *best)] * 3


@pytest.mark.slow
def test_on_a_terminal_one_live_line_stays_last_and_the_leaderboard_follows_it(
    tmp_path, store, mnist_npz
):
    code, output = on_a_terminal(
        sweep_args(tmp_path, store, mnist_npz, "model.dropout=0.2,0.5", sweep_dir="s"), tmp_path
    )
    assert code == 0, (tmp_path / "stderr.txt").read_text()[-3000:]
    assert f"{ERASE_LINE}sweep progress: 1/2 jobs, " in output  # drawn in place
    assert f"{ERASE_LINE}sweep progress: 2/2 jobs, " in output  # and rewritten
    shown = screen(output)
    (progress,) = [line for line in shown if "sweep progress" in line]  # one line, at the end
    children = store.sweep_children()
    value, job = best_so_far(children)[-1]
    assert re.fullmatch(
        rf"sweep progress: 2/2 jobs, \d+:\d\d elapsed, best final/val_accuracy {value} "
        rf"\(job {job}\)",
        progress,
    )
    # The jobs' own output (Hydra's, Keras's epoch lines, each job's line) is untouched
    # above it, and the leaderboard starts on a line of its own below it.
    job_lines = [line for line in shown if "sweep job" in line]
    assert len(job_lines) == 2 and all(JOB_LINE.fullmatch(line) for line in job_lines)
    assert sum(bool(EPOCH_LINE.fullmatch(line)) for line in shown) == 2
    assert all(line.startswith("[") for line in shown if "[HYDRA]" in line)
    at = shown.index(progress)
    assert shown[at - 1].startswith("sweep job 1 ") and shown[at + 1 : at + 3] == [
        "",
        f"Sweep {tmp_path / 's'}: 2 finished, 0 failed; ranked by validation accuracy (* = best)",
    ]


@pytest.mark.slow
def test_joblib_workers_print_plain_lines_even_on_a_terminal(tmp_path, store, mnist_npz):
    args = ("model.dropout=0.2,0.5", "train.verbose=0", "hydra/launcher=joblib")
    code, output = on_a_terminal(
        sweep_args(tmp_path, store, mnist_npz, *args, "hydra.launcher.n_jobs=2", sweep_dir="s"),
        tmp_path,
    )
    assert code == 0, (tmp_path / "stderr.txt").read_text()[-3000:]
    assert ERASE_LINE not in output
    lines = PLAIN.findall(output)
    # Two workers: each prints as its job ends (both may see the other's run ended).
    assert len(lines) == 2 and {line[1] for line in lines} == {"2"}
    assert max(int(line[0]) for line in lines) == 2
    best = best_so_far(store.sweep_children())[-1]
    assert {(line[4], line[5]) for line in lines if line[0] == "2"} == {best}


@pytest.mark.slow
def test_a_single_run_prints_no_progress_line(tmp_path, store, mnist_npz):
    done = run_cli(
        [
            "train.epochs=1",
            "train.checkpoint=false",
            "tracking.log_model=false",
            AROUND_TRAINING,
            f"data.path={mnist_npz}",
            f"hydra.run.dir={tmp_path / 'run'}",
            *store.overrides,
        ],
        tmp_path,
    )
    assert done.returncode == 0, done.stderr
    assert EPOCH_LINE.search(done.stdout)  # Keras's own line, as ever
    assert "sweep progress" not in done.stdout
