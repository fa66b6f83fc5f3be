"""What a search finds for a fixed budget: TPE + median pruning, TPE, random search.

    python -m bench.search            (or: make bench-search)
    python -m bench.search --trials 30 --epochs 5            (the issue's budget)
    python -m bench.search --trials 15 --epochs 4 --batch-size 128

Three Optuna sweeps (``+sweep=optuna_mlp``, the same search space and seed) run here one
after the other, each as its own ``python -m mnist_exp.run -m`` subprocess with the same
budget of N trials of at most E epochs, on the JAX backend and full MNIST
(``../shared/data/mnist.npz`` when present, else the offline subset). Each gets a fresh
study (its own name and SQLite storage) and its own MLflow store in a temporary folder,
so nothing is continued. For each: the best validation accuracy of a completed trial,
the sweep's wall time, the epochs trained over all trials (the epochs each trial
reported to the study) and the trials pruned, read back with ``optuna.load_study``.
Results go to ``bench/results/search.json`` (rewritten after every search, so an
interrupted run keeps what it measured); a Markdown table is printed.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import optuna
from optuna.trial import TrialState

REPO = Path(__file__).resolve().parents[1]
FULL_MNIST = REPO.parent / "shared" / "data" / "mnist.npz"
OUT = REPO / "bench" / "results" / "search.json"
SEARCHES = {
    "TPE + median pruning": ["hydra.sweeper.sampler=tpe", "hydra.sweeper.pruner=median"],
    "TPE, no pruning": ["hydra.sweeper.sampler=tpe", "hydra.sweeper.pruner=none"],
    "random, no pruning": ["hydra.sweeper.sampler=random", "hydra.sweeper.pruner=none"],
}


def data_overrides() -> tuple[list[str], str]:
    """Overrides that select the benchmark data, and its name for the report."""
    if FULL_MNIST.exists():
        return [f"data.path={FULL_MNIST}"], "full MNIST (60k/10k)"
    return ["data.download=false"], "offline subset (5k)"


def run_search(
    name: str, extra: list[str], common: list[str], workdir: Path, log: Path
) -> dict[str, object]:
    """Run one search in a subprocess; return its measurements read from its study."""
    slug = "".join(c if c.isalnum() else "_" for c in name.lower()).strip("_")
    folder = workdir / slug
    folder.mkdir()
    storage = f"sqlite:///{folder / 'optuna.db'}"
    study_name = f"bench-{slug}-{int(time.time())}"
    command = [
        sys.executable,
        "-m",
        "mnist_exp.run",
        "-m",
        "+sweep=optuna_mlp",
        *extra,
        *common,
        f"hydra.sweeper.storage={storage}",
        f"hydra.sweeper.study_name={study_name}",
        f"tracking.uri=sqlite:///{folder / 'mlflow.db'}",
        f"tracking.artifact_location={folder / 'artifacts'}",
        f"hydra.sweep.dir={folder / 'sweep'}",
        f"hydra.run.dir={folder / 'run'}",
    ]
    seconds = timed_into_log(command, folder, log, name)
    study = optuna.load_study(study_name=study_name, storage=storage)
    trials = study.trials
    completed = [t for t in trials if t.state == TrialState.COMPLETE]
    pruned = [t for t in trials if t.state == TrialState.PRUNED]
    best = max(completed, key=lambda t: t.value) if completed else None
    return {
        "search": name,
        "trials": len(trials),
        "completed": len(completed),
        "pruned": len(pruned),
        "failed": sum(t.state == TrialState.FAIL for t in trials),
        "epochs_trained": sum(len(t.intermediate_values) for t in trials),
        "best_val_accuracy": round(best.value, 4) if best else None,
        "best_params": best.params if best else None,
        "best_trial": best.number if best else None,
        "wall_s": round(seconds, 1),
    }


def table(rows: list[dict[str, object]], budget: int) -> str:
    """The results as a Markdown table."""
    lines = [
        "| search | best val accuracy | wall time | epochs trained | trials pruned |",
        "|---|---:|---:|---:|---:|",
    ]
    for row in rows:
        best = row["best_val_accuracy"]
        lines.append(
            f"| {row['search']} | {best:.4f} | {row['wall_s'] / 60:.1f} min "
            f"({row['wall_s']:.0f} s) | {row['epochs_trained']} / {budget} | "
            f"{row['pruned']} / {row['trials']} |"
            if best is not None
            else f"| {row['search']} | - | {row['wall_s']:.0f} s | {row['epochs_trained']} | "
            f"{row['pruned']} / {row['trials']} |"
        )
    return "\n".join(lines)


def timed_into_log(command: list[str], cwd: Path, log: Path, name: str) -> float:
    """Run ``command`` in ``cwd``, its output appended to ``log`` under a ``name`` header;
    return its wall time from launch to exit (a failure ends the benchmark, naming it)."""
    start = time.perf_counter()
    with log.open("a") as out:
        out.write(f"\n=== {name}: {' '.join(command)}\n")
        out.flush()
        done = subprocess.run(command, cwd=cwd, stdout=out, stderr=subprocess.STDOUT)
    seconds = time.perf_counter() - start
    if done.returncode != 0:
        raise SystemExit(f"bench: {name} failed (exit {done.returncode}), see {log}")
    return seconds


def budget_overrides(args: argparse.Namespace, data: list[str]) -> list[str]:
    """The overrides every search of a benchmark shares: its budget, seed and ``data``,
    on JAX, a fresh sweep each time."""
    common = [
        f"hydra.sweeper.n_trials={args.trials}",
        f"train.epochs={args.epochs}",
        "train.backend=jax",
        "train.verbose=0",
        f"seed={args.seed}",
        "sweep_fresh=true",
        *data,
    ]
    if args.batch_size is not None:
        common.append(f"train.batch_size={args.batch_size}")
    return common


def budget_arguments(prog: str, description: str | None, trials: int) -> argparse.ArgumentParser:
    """The command line of a search benchmark: the budget (``--trials``, ``--epochs``), the
    sampler's ``--seed`` and an optional fixed ``--batch-size``."""
    parser = argparse.ArgumentParser(prog=prog, description=description)
    parser.add_argument("--trials", type=int, default=trials, help="trials per search (N)")
    parser.add_argument("--epochs", type=int, default=5, help="epochs per trial at most (E)")
    parser.add_argument(
        "--batch-size",
        type=int,
        default=None,
        help="fix train.batch_size (removes it from the search space; default: searched)",
    )
    parser.add_argument("--seed", type=int, default=42, help="the sampler's seed (seed=...)")
    return parser


def result_header(args: argparse.Namespace, prog: str, what: str, data: str) -> dict:
    """The start of a search benchmark's JSON: what ran (``what``, and the fixed batch
    size if any), on which data and machine, the command that reproduces it, the budget."""
    options = " ".join(
        f"--{key.replace('_', '-')} {value}" for key, value in vars(args).items() if value
    )
    return {
        "benchmark": (
            f"{args.trials} trials x at most {args.epochs} epochs, {what}"
            + (f" with train.batch_size={args.batch_size} fixed" if args.batch_size else "")
        ),
        "data": data,
        "backend": "jax",
        "cores": os.cpu_count(),
        "python": platform.python_version(),
        "optuna": optuna.__version__,
        "date": time.strftime("%Y-%m-%d"),
        "command": f"{prog} {options}",
        "epoch_budget": args.trials * args.epochs,
        "searches": [],
    }


def main(argv: list[str] | None = None) -> None:
    """Run the three searches, print a table and write bench/results/search.json."""
    args = budget_arguments("python -m bench.search", __doc__, trials=30).parse_args(argv)

    data, data_name = data_overrides()
    common = budget_overrides(args, data)
    result = result_header(
        args, "python -m bench.search", "search space of conf/sweep/optuna_mlp.yaml", data_name
    )
    budget = result["epoch_budget"]
    rows: list[dict[str, object]] = []
    log = REPO / "outputs" / "bench-search.log"
    log.parent.mkdir(parents=True, exist_ok=True)
    log.write_text("")
    with tempfile.TemporaryDirectory(prefix="bench-search-") as folder:
        for name, extra in SEARCHES.items():
            row = run_search(name, extra, common, Path(folder), log)
            rows.append(row)
            result["searches"] = rows
            OUT.write_text(json.dumps(result, indent=2) + "\n")
            print(f"{name}: {row}", flush=True)
    print(f"\n{result['benchmark']}, {data_name}, JAX backend, {result['cores']} cores\n")
    print(table(rows, budget))
    print(f"\nwritten to {OUT.relative_to(REPO)}")


if __name__ == "__main__":
    main()
