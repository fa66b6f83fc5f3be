"""The project's Optuna study against the same study written by hand, in one sitting.

    python -m bench.study                        (20 trials, at most 5 epochs: issue 26)
    python -m bench.study --trials 3 --epochs 1  (a smoke run)

Two searches of the same space (``conf/sweep/optuna_mlp.yaml``), sampler (TPE, seeded),
pruner (median, Optuna's defaults) and budget (N trials of at most E epochs), each a
subprocess timed from launch to exit, one after the other:

- the project: ``python -m mnist_exp.run -m +sweep=optuna_mlp hydra.sweeper.sampler=tpe
  hydra.sweeper.pruner=median`` with ``train.backend=jax``, a fresh study (its own name
  and SQLite storage) and its own MLflow store in a temporary folder, launched and read
  back by :func:`bench.search.run_search` (the "TPE + median pruning" row of
  ``bench.search``);
- the yardstick: ``bench/plain_study.py``, plain Optuna and Keras on JAX, no Hydra, no
  MLflow, an in-memory study.

For each: trials completed and pruned, epochs trained, the best validation accuracy of
a completed trial, the wall time and its ratio to the plain script's (issue 26's target:
the project at most 1.1x). The trials sampled alike (the same params in the same order,
from the first trial on) are counted as a check that both searched the same way: with
TPE's seeded start-up draws they agree until the first trial whose value differs enough
to move TPE elsewhere. Writes ``bench/results/study.json`` (after each search, so an
interrupted run keeps what it measured) and prints a Markdown table.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

import optuna

from bench.search import (
    FULL_MNIST,
    REPO,
    SEARCHES,
    budget_arguments,
    budget_overrides,
    result_header,
    run_search,
    timed_into_log,
)

OUT = REPO / "bench" / "results" / "study.json"
PLAIN = REPO / "bench" / "plain_study.py"
PROJECT_SEARCH = "TPE + median pruning"
PROJECT_NAME = "mnist_exp (Hydra + MLflow)"
PLAIN_NAME = "plain Optuna + Keras"


def project_params(folder: Path) -> list[dict[str, object]]:
    """The params of each trial of the one study in ``folder``'s ``optuna.db``, in order."""
    storage = f"sqlite:///{folder / 'optuna.db'}"
    (name,) = optuna.get_all_study_names(storage)
    return [t.params for t in optuna.load_study(study_name=name, storage=storage).trials]


def run_project(args: argparse.Namespace, workdir: Path, log: Path) -> dict[str, object]:
    """The project's study (``bench.search``'s TPE + median pruning row) on ``args``'s
    budget, data and seed; its measurements, and each trial's params."""
    common = budget_overrides(args, [f"data.path={Path(args.data).resolve()}"])
    row = run_search(PROJECT_SEARCH, SEARCHES[PROJECT_SEARCH], common, workdir, log)
    slug = "".join(c if c.isalnum() else "_" for c in PROJECT_SEARCH.lower()).strip("_")
    return row | {"search": PROJECT_NAME, "params": project_params(workdir / slug)}


def run_plain(args: argparse.Namespace, workdir: Path, log: Path) -> dict[str, object]:
    """``bench/plain_study.py`` on ``args``'s budget, data and seed, timed from launch to
    exit; its measurements (each trial's params included)."""
    result = workdir / "plain.json"
    command = [
        sys.executable,
        str(PLAIN),
        f"--trials={args.trials}",
        f"--epochs={args.epochs}",
        f"--data={Path(args.data).resolve()}",
        f"--seed={args.seed}",
        f"--out={result}",
    ]
    if args.batch_size is not None:
        command.append(f"--batch-size={args.batch_size}")
    seconds = timed_into_log(command, workdir, log, PLAIN_NAME)
    row = json.loads(result.read_text())
    return row | {"search": PLAIN_NAME, "wall_s": round(seconds, 1)}


def sampled_alike(first: list[dict[str, object]], second: list[dict[str, object]]) -> int:
    """How many trials, from the first on, the two studies sampled with the same params."""
    count = 0
    for one, other in zip(first, second, strict=False):
        if one.keys() != other.keys() or any(not _same(one[key], other[key]) for key in one):
            break
        count += 1
    return count


def _same(one: object, other: object) -> bool:
    """Whether two sampled values are equal (floats to 12 significant digits)."""
    if isinstance(one, float) and isinstance(other, float):
        return f"{one:.12g}" == f"{other:.12g}"
    return one == other


def table(rows: list[dict[str, object]], plain_s: float, budget: int) -> str:
    """The results as a Markdown table, each wall time also as a ratio to ``plain_s``."""
    lines = [
        "| search | trials (complete / pruned) | epochs trained | best val accuracy "
        "| wall s | ratio to plain |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for row in rows:
        best = row["best_val_accuracy"]
        lines.append(
            f"| {row['search']} | {row['trials']} ({row['completed']} / {row['pruned']}) "
            f"| {row['epochs_trained']} / {budget} | "
            f"{'-' if best is None else f'{best:.4f}'} | {row['wall_s']:.1f} "
            f"| {row['wall_s'] / plain_s:.2f}x |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    """Run both searches, print the table and write bench/results/study.json."""
    parser = budget_arguments("python -m bench.study", __doc__, trials=20)
    parser.add_argument("--data", default=str(FULL_MNIST), help="a keras-layout MNIST .npz")
    args = parser.parse_args(argv)
    if not Path(args.data).is_file():
        raise SystemExit(f"bench.study: no data at {args.data} (pass --data PATH.npz)")
    what = "TPE + median pruning, search space of conf/sweep/optuna_mlp.yaml"
    result = result_header(args, "python -m bench.study", what, str(args.data))
    budget = result["epoch_budget"]
    log = REPO / "outputs" / "bench-study.log"
    log.parent.mkdir(parents=True, exist_ok=True)
    log.write_text("")
    rows: list[dict[str, object]] = []
    with tempfile.TemporaryDirectory(prefix="bench-study-") as folder:
        for run in (run_plain, run_project):
            row = run(args, Path(folder), log)
            rows.append(row)
            result["searches"] = rows
            OUT.write_text(json.dumps(result, indent=2) + "\n")
            print(
                f"{row['search']}: {row['wall_s']} s, best {row['best_val_accuracy']}", flush=True
            )
    plain, project = rows
    ratio = project["wall_s"] / plain["wall_s"]
    result["ratio_project_to_plain"] = round(ratio, 3)
    result["trials_sampled_alike"] = sampled_alike(plain["params"], project["params"])
    OUT.write_text(json.dumps(result, indent=2) + "\n")
    print(f"\n{result['benchmark']}, {args.data}, JAX backend, {result['cores']} cores\n")
    print(table(rows, plain["wall_s"], budget))
    print(
        f"\nproject / plain wall time: {ratio:.2f}x (target <= 1.1x); "
        f"trials sampled alike from the first: {result['trials_sampled_alike']} of {args.trials}"
    )
    print(f"written to {OUT.relative_to(REPO)}")


if __name__ == "__main__":
    main()
