"""What a sweep costs beyond its training: wall time against the sum of its jobs' fits.

    python -m bench.sweep_cost            (or: make bench-sweep-cost)

Runs ``python -m mnist_exp.run -m seed=1,...,8 train.epochs=2`` (the default backend,
sequential launcher) on full MNIST (``../shared/data/mnist.npz`` when present, else the
offline subset) into a temporary MLflow store, after one untimed run that warms JAX's
compilation cache as any earlier run would. Reports the sweep's wall time (launch to
exit), the sum of its jobs' ``time/fit_seconds`` and their ratio (target: at most 1.6),
and each job's ``time/startup_seconds`` and ``time/overhead_seconds`` (target: median at
most 0.5 s). Results go to ``bench/results/sweep_cost.json``.
"""

from __future__ import annotations

import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from mlflow import MlflowClient

from bench.sweep import REPO, data_overrides

SEEDS = 8
EPOCHS = 2


def main() -> None:
    """Time the seed sweep, print what each job spent outside training, write the JSON."""
    data, data_name = data_overrides()
    with tempfile.TemporaryDirectory() as folder:
        workdir = Path(folder)
        store = f"sqlite:///{workdir / 'mlflow.db'}"
        common = [*data, "train.verbose=0", f"tracking.uri={store}"]
        subprocess.run(
            [sys.executable, "-m", "mnist_exp.run", *common, "train.epochs=1"],
            cwd=workdir,
            check=True,
            capture_output=True,
        )
        seeds = ",".join(str(seed) for seed in range(1, SEEDS + 1))
        start = time.perf_counter()
        sweep = [f"seed={seeds}", f"train.epochs={EPOCHS}", f"hydra.sweep.dir={workdir / 'sweep'}"]
        subprocess.run(
            [sys.executable, "-m", "mnist_exp.run", "-m", *sweep, *common],
            cwd=workdir,
            check=True,
            capture_output=True,
        )
        wall = time.perf_counter() - start
        jobs = sorted(
            (
                run
                for run in MlflowClient(store).search_runs(["1"], max_results=100)
                if run.data.tags.get("sweep.job_num") is not None
            ),
            key=lambda run: int(run.data.tags["sweep.job_num"]),
        )
    per_job = [
        {
            "job": int(run.data.tags["sweep.job_num"]),
            "fit_s": run.data.metrics["time/fit_seconds"],
            "startup_s": run.data.metrics["time/startup_seconds"],
            "overhead_s": run.data.metrics["time/overhead_seconds"],
        }
        for run in jobs
    ]
    fit = sum(job["fit_s"] for job in per_job)
    result = {
        "benchmark": f"{SEEDS}-seed x {EPOCHS}-epoch sweep, default backend, sequential",
        "data": data_name,
        "cores": os.cpu_count(),
        "python": platform.python_version(),
        "wall_s": round(wall, 1),
        "fit_sum_s": round(fit, 1),
        "wall_over_fit": round(wall / fit, 2),
        "median_overhead_s": round(statistics.median(j["overhead_s"] for j in per_job), 2),
        "median_startup_s": round(statistics.median(j["startup_s"] for j in per_job), 2),
        "jobs": per_job,
        "date": time.strftime("%Y-%m-%d %H:%M"),
        "command": "python -m bench.sweep_cost",
    }
    out = REPO / "bench" / "results" / "sweep_cost.json"
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"{result['benchmark']} on {data_name}, {result['cores']} cores")
    print("| job | fit s | startup s | overhead s |\n|---|---|---|---|")
    for job in per_job:
        times = (job["fit_s"], job["startup_s"], job["overhead_s"])
        print(f"| {job['job']} | " + " | ".join(f"{value:.2f}" for value in times) + " |")
    print(
        f"\nwall {wall:.1f} s for {fit:.1f} s of training: {result['wall_over_fit']}x "
        f"(target <= 1.6x); median overhead per job {result['median_overhead_s']} s "
        "(target <= 0.5 s)"
    )
    print(f"written to {out.relative_to(REPO)}")


if __name__ == "__main__":
    main()
