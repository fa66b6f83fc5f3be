"""``python -m bench`` (or ``make bench``): mnist_exp against a plain Keras script.

In one sitting, on the same data (``../shared/data/mnist.npz`` when present, else the
offline subset), epochs, batch size and seed, it runs the plain script
(``bench/plain_keras.py``), ``python -m mnist_exp.run`` in several configurations, and the
same model written directly in JAX (``bench/jax_yardstick.py``, the speed limit), and
reports wall time, training samples/s, achieved GFLOP/s against the measured matmul peak,
test accuracy and every ratio to the plain script; plus the time of ``--help`` and
``--cfg job``, launch-to-training (and its median over five short runs), MLflow's cost per
epoch and the end-to-end overhead.
Writes ``bench/results/bench.json``; ``docs/benchmarks.md`` quotes it.
"""

from __future__ import annotations

import json
import os
import platform
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from mlflow import MlflowClient

REPO = Path(__file__).resolve().parents[1]
FULL_MNIST = REPO.parent / "shared" / "data" / "mnist.npz"
EPOCHS, BATCH, SEED = 10, 32, 42
# Training FLOPs per sample of the reference MLP: 2 (multiply-add) x 3 (forward, two
# backward products) x its 251,136 dense weights.
FLOP_PER_SAMPLE = 6 * (784 * 256 + 256 * 128 + 128 * 128 + 128 * 10)
CONFIGS = {
    "mnist_exp default (train.backend=auto: JAX for the MLP on a CPU)": [],
    "train.backend=tensorflow (the default before)": ["train.backend=tensorflow"],
}
YARDSTICK = "yardstick: the same model written directly in JAX"


def timed(command: list[str], cwd: Path) -> tuple[float, str]:
    """Run a command; return its wall time and stdout (raise on failure)."""
    start = time.perf_counter()
    done = subprocess.run(command, cwd=cwd, capture_output=True, text=True, check=False)
    seconds = time.perf_counter() - start
    if done.returncode != 0:
        raise SystemExit(f"bench: {' '.join(command)} failed:\n{done.stderr[-3000:]}")
    return seconds, done.stdout


def data_file(workdir: Path) -> tuple[Path, str]:
    """The benchmark data: full MNIST if present, else the offline subset saved as .npz."""
    if FULL_MNIST.exists():
        return FULL_MNIST, "full MNIST (60k train / 10k test)"
    import numpy as np

    from mnist_exp.data.sources import offline_subset

    arrays = offline_subset(0.2, SEED)
    path = workdir / "offline.npz"
    np.savez(path, **arrays)
    return path, "offline subset (4k train / 1k test)"


def startup_times(workdir: Path) -> dict[str, float]:
    """Median wall time of --help and --cfg job (three tries each)."""
    result = {}
    for name, args in {"--help": ["--help"], "--cfg job": ["--cfg", "job"]}.items():
        tries = [timed([sys.executable, "-m", "mnist_exp.run", *args], workdir)[0] for _ in "abc"]
        result[name] = statistics.median(tries)
    return result


def launch_to_train(command: list[str], store: str, workdir: Path, tries: int = 5) -> float:
    """Median ``time/startup_seconds`` (process launch to the first training step) of
    ``tries`` one-epoch runs of ``command``: one run's start-up varies by a few tenths."""
    client = MlflowClient(tracking_uri=store)
    seconds = []
    for _ in range(tries):
        _, out = timed([*command, "train.epochs=1", "tracking.experiment=start-up"], workdir)
        run_id = next(line.split()[2] for line in out.splitlines() if line.startswith("mlflow run"))
        seconds.append(client.get_run(run_id).data.metrics["time/startup_seconds"])
    return statistics.median(seconds)


def main() -> None:
    """Run everything, print the table, write bench/results/bench.json."""
    with tempfile.TemporaryDirectory() as folder:
        workdir = Path(folder)
        data, data_name = data_file(workdir)
        wall, out = timed(
            [
                sys.executable,
                "-m",
                "bench.plain_keras",
                str(data),
                str(EPOCHS),
                str(BATCH),
                str(SEED),
            ],
            REPO,
        )
        plain = {**json.loads(out.strip().splitlines()[-1]), "wall_seconds": wall}
        peak = plain["matmul_peak_gflops"]
        rows = [
            _row(
                "plain Keras script",
                wall,
                plain["fit_seconds"],
                plain["train_samples"],
                plain["test_accuracy"],
                peak,
                plain,
            )
        ]
        _, out = timed(
            [
                sys.executable,
                "-m",
                "bench.jax_yardstick",
                str(data),
                *map(str, (EPOCHS, BATCH, SEED)),
            ],
            REPO,
        )
        yardstick = json.loads(out.strip().splitlines()[-1])
        rows.append(
            _row(
                YARDSTICK,
                yardstick["fit_seconds"],  # no start-up counted: it is not a program to run
                yardstick["fit_seconds"],
                yardstick["train_samples"],
                yardstick["test_accuracy"],
                peak,
                plain,
                steady_epoch=yardstick["median_epoch_seconds"],
            )
        )
        store = f"sqlite:///{workdir / 'mlflow.db'}"
        os.environ["JAX_COMPILATION_CACHE_DIR"] = str(workdir / "jax_cache")
        for name, overrides in CONFIGS.items():
            command = [
                sys.executable,
                "-m",
                "mnist_exp.run",
                f"data.path={data}",
                f"train.batch_size={BATCH}",
                f"seed={SEED}",
                "train.verbose=0",
                f"tracking.uri={store}",
                f"tracking.artifact_location={workdir / 'artifacts'}",
                f"hydra.run.dir={workdir / re.sub(r'[^a-z0-9]+', '_', name)}",
                *overrides,
            ]
            if not overrides:
                default_command = command
            if "train.backend=tensorflow" not in overrides:
                # Warm JAX's compilation cache as any earlier run of this config would.
                timed([*command, "train.epochs=1", "tracking.experiment=warm-up"], workdir)
            wall, out = timed([*command, f"train.epochs={EPOCHS}"], workdir)
            run_id = next(
                line.split()[2] for line in out.splitlines() if line.startswith("mlflow run")
            )
            client = MlflowClient(tracking_uri=store)
            run = client.get_run(run_id)
            metrics = run.data.metrics
            samples = int(run.data.tags["dataset.train_samples"])
            epochs = [m.value for m in client.get_metric_history(run_id, "epoch/seconds")]
            rows.append(
                _row(
                    name,
                    wall,
                    metrics["time/fit_seconds"],
                    samples,
                    metrics["final/test_accuracy"],
                    peak,
                    plain,
                    metrics,
                    steady_epoch=statistics.median(epochs[1:]),
                )
            )
        startup = startup_times(workdir)
        startup["launch→train"] = launch_to_train(default_command, store, workdir)
    result = {
        "command": "python -m bench",
        "date": time.strftime("%Y-%m-%d %H:%M"),
        "machine": {
            "cores": os.cpu_count(),
            "python": platform.python_version(),
            "jax_device": yardstick["device"],
            "tensorflow_device": "cpu (tensorflow-cpu)",
        },
        "data": data_name,
        "epochs": EPOCHS,
        "batch_size": BATCH,
        "seed": SEED,
        "matmul_peak_gflops": round(peak, 1),
        "flop_per_training_sample": FLOP_PER_SAMPLE,
        "rows": rows,
        "startup_seconds": {name: round(value, 2) for name, value in startup.items()},
    }
    out_file = REPO / "bench" / "results" / "bench.json"
    out_file.write_text(json.dumps(result, indent=2) + "\n")
    print(_table(result))
    print(f"\nwritten to {out_file.relative_to(REPO)}")


def _row(
    name, wall, fit_seconds, samples, accuracy, peak, plain, metrics=None, steady_epoch=None
) -> dict:
    rate = samples * EPOCHS / fit_seconds
    row = {
        "config": name,
        "wall_seconds": round(wall, 1),
        "train_seconds": round(fit_seconds, 1),
        "samples_per_second": round(rate),
        "gflops": round(rate * FLOP_PER_SAMPLE / 1e9, 1),
        "fraction_of_peak": round(rate * FLOP_PER_SAMPLE / 1e9 / peak, 3),
        "test_accuracy": round(accuracy, 4),
        "speedup_vs_plain": round(plain["fit_seconds"] / fit_seconds, 2),
        "wall_speedup_vs_plain": round(plain["wall_seconds"] / wall, 2),
        "overhead_seconds": round(wall - fit_seconds, 1),
    }
    if steady_epoch:  # the median epoch after the first (which compiles): steady speed
        row["steady_samples_per_second"] = round(samples / steady_epoch)
    if metrics:
        row["startup_seconds"] = round(metrics["time/startup_seconds"], 1)
        row["mlflow_ms_per_epoch"] = round(1000 * metrics["time/mlflow_seconds_per_epoch"], 1)
    return row


def _table(result: dict) -> str:
    head = (
        f"{result['data']}, {result['epochs']} epochs, batch {result['batch_size']}, "
        f"{result['machine']['cores']} cores; matmul peak "
        f"{result['matmul_peak_gflops']} GFLOP/s; JAX on {result['machine']['jax_device']}, "
        f"TensorFlow on {result['machine']['tensorflow_device']}"
    )
    lines = [
        head,
        "",
        "| config | train s | samples/s | steady samples/s | GFLOP/s (of peak) | test acc | "
        "speed-up vs plain | wall s | wall speed-up vs plain | overhead s | launch→train s | "
        "MLflow ms/epoch |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for row in result["rows"]:
        lines.append(
            f"| {row['config']} | {row['train_seconds']} | {row['samples_per_second']:,} | "
            f"{_thousands(row.get('steady_samples_per_second'))} | "
            f"{row['gflops']} ({row['fraction_of_peak']:.0%}) | {row['test_accuracy']:.4f} | "
            f"{row['speedup_vs_plain']:.2f}x | {row['wall_seconds']} | "
            f"{row['wall_speedup_vs_plain']:.2f}x | "
            f"{row['overhead_seconds']} | {row.get('startup_seconds', '-')} | "
            f"{row.get('mlflow_ms_per_epoch', '-')} |"
        )
    rows = {row["config"]: row for row in result["rows"]}
    device_path = rows[next(name for name in rows if name.startswith("mnist_exp default"))]
    yardstick = rows[YARDSTICK]
    lines.append(
        f"\n{device_path['config']}: "
        f"{device_path['steady_samples_per_second'] / yardstick['steady_samples_per_second']:.0%}"
        " of the yardstick's training samples/s in steady epochs (median after the first), "
        f"{device_path['samples_per_second'] / yardstick['samples_per_second']:.0%} over the "
        "whole fit (its first epoch traces and loads the compiled epoch; the yardstick's "
        "compilation is not timed)"
    )
    startup = result["startup_seconds"]
    lines.append(
        f"\n`--help`: {startup['--help']} s, `--cfg job`: {startup['--cfg job']} s (median of 3); "
        f"launch to the first training step of the default: {startup['launch→train']} s "
        "(median of 5 one-epoch runs)"
    )
    return "\n".join(lines)


def _thousands(value: int | None) -> str:
    return "-" if value is None else f"{value:,}"


if __name__ == "__main__":
    main()
