"""Wall time of one 8-job sweep run sequentially and with the joblib launcher, as a ratio.

    python -m bench.sweep            (or: make bench-sweep)

Both sweeps run here, one after the other, on the same data (full MNIST from
``../shared/data/mnist.npz`` when present, else the offline subset) into a temporary
MLflow store. Results go to ``bench/results/sweep.json``.
"""

from __future__ import annotations

import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
FULL_MNIST = REPO.parent / "shared" / "data" / "mnist.npz"
JOBS = 8
WORKERS = 2


def data_overrides() -> tuple[list[str], str]:
    """Overrides that select the benchmark data, and its name for the report."""
    if FULL_MNIST.exists():
        return [f"data.path={FULL_MNIST}"], "full MNIST (60k/10k)"
    return ["data.download=false"], "offline subset (5k)"


def time_sweep(extra: list[str], common: list[str], workdir: Path) -> float:
    """Run one sweep in a subprocess and return its wall time in seconds."""
    start = time.perf_counter()
    subprocess.run(
        [sys.executable, "-m", "mnist_exp.run", "-m", *common, *extra],
        cwd=workdir,
        check=True,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    return time.perf_counter() - start


def main() -> None:
    """Time both sweeps, print a table and write bench/results/sweep.json."""
    data, data_name = data_overrides()
    dropouts = ",".join(f"{0.05 * (i + 1):.2f}" for i in range(JOBS))
    with tempfile.TemporaryDirectory() as folder:
        workdir = Path(folder)
        common = [
            f"model.dropout={dropouts}",
            "train.epochs=1",
            "train.verbose=0",
            "sweep_fresh=true",  # both sweeps train every job (same overrides otherwise)
            *data,
            f"tracking.uri=sqlite:///{workdir / 'mlflow.db'}",
            f"tracking.artifact_location={workdir / 'artifacts'}",
        ]
        sequential = time_sweep([f"hydra.sweep.dir={workdir / 'seq'}"], common, workdir)
        parallel = time_sweep(
            [
                "hydra/launcher=joblib",
                f"hydra.launcher.n_jobs={WORKERS}",
                f"hydra.sweep.dir={workdir / 'par'}",
            ],
            common,
            workdir,
        )
    result = {
        "benchmark": f"{JOBS}-job sweep (1 epoch each), sequential vs joblib x{WORKERS}",
        "data": data_name,
        "cores": os.cpu_count(),
        "python": platform.python_version(),
        "sequential_s": round(sequential, 1),
        "joblib_s": round(parallel, 1),
        "speedup": round(sequential / parallel, 2),
        "date": time.strftime("%Y-%m-%d"),
        "command": "python -m bench.sweep",
    }
    out = REPO / "bench" / "results" / "sweep.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"{result['benchmark']} on {data_name}, {result['cores']} cores")
    print(f"  sequential       {sequential:7.1f} s")
    print(f"  joblib n_jobs={WORKERS}  {parallel:7.1f} s   ({result['speedup']}x faster)")
    print(f"written to {out.relative_to(REPO)}")


if __name__ == "__main__":
    main()
