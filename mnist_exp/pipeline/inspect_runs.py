"""What ``runs ls``, ``runs show`` and ``runs diff`` print: the store read
(:mod:`mnist_exp.tracking.run_table`, :mod:`mnist_exp.tracking.run_details`), the
questions asked (:mod:`mnist_exp.results.run_query`) and the text laid out
(:mod:`mnist_exp.results.run_views`).

Each function returns the text to print; a bad input (an unknown run or key, an empty
store) is a ConfigError of one line.
"""

from __future__ import annotations

import shlex
from dataclasses import dataclass, field

from mnist_exp.config.schema import ConfigError
from mnist_exp.pipeline.sweep import override_value
from mnist_exp.results.metric_names import OBJECTIVE, TEST_ACCURACY
from mnist_exp.results.run_query import differing_keys, group_runs, sort_runs
from mnist_exp.results.run_views import (
    duration,
    groups_listing,
    key_value_lines,
    metric,
    moment,
    runs_listing,
    shown,
    side_by_side,
)
from mnist_exp.tracking.run_details import RunDetails, run_details
from mnist_exp.tracking.run_table import (
    RUN_COLUMNS,
    TAG_PREFIX,
    load_runs,
    open_client,
    resolve_run,
)
from mnist_exp.tracking.store import DEFAULT_STORE, absolute_store_uri

LISTED_METRICS = [OBJECTIVE, TEST_ACCURACY]
STATUSES = ("RUNNING", "FINISHED", "FAILED", "KILLED", "SCHEDULED")


@dataclass(frozen=True)
class Listing:
    """What ``runs ls`` was asked for (see its ``--help``)."""

    tracking_uri: str
    experiment: str = "mnist"
    where: list[str] = field(default_factory=list)
    sweep: str | None = None
    status: list[str] = field(default_factory=list)
    sort: str | None = None
    ascending: bool = False
    limit: int | None = None
    columns: list[str] = field(default_factory=list)
    group_by: str | None = None
    form: str = "table"


def list_runs(request: Listing) -> str:
    """The runs ``request`` selects, newest first (or sorted), with the config keys that
    tell them apart; or, with ``group_by``, one row per value of that key."""
    frame = load_runs(request.tracking_uri, request.experiment, request.where, request.sweep)
    if frame.empty:
        raise ConfigError(_nothing_found(request))
    if request.status:
        wanted = {status.upper() for status in request.status}
        if unknown := wanted - set(STATUSES):
            raise ConfigError(
                f"--status {', '.join(sorted(unknown))}: expected one of {', '.join(STATUSES)}"
            )
        frame = frame[frame["status"].isin(wanted)].reset_index(drop=True)
    if request.sort:
        frame = sort_runs(frame, request.sort, request.ascending)
    if request.limit:
        frame = frame.head(request.limit)
    if request.group_by:
        table = group_runs(frame, request.group_by, LISTED_METRICS)
        return groups_listing(table, request.group_by, LISTED_METRICS, request.form)
    config_keys = [c for c in frame.columns if _is_config_key(c)]
    for column in request.columns:
        if column not in frame.columns:
            raise ConfigError(f"--columns {column}: no run has this key")
    keys = list(dict.fromkeys([*differing_keys(frame, config_keys), *request.columns]))
    metrics = [*LISTED_METRICS, *(m for m in request.columns if m in LISTED_METRICS)]
    keys = [k for k in keys if k not in metrics]
    return runs_listing(frame, keys, list(dict.fromkeys(metrics)), request.form)


def _is_config_key(column: str) -> bool:
    return column not in RUN_COLUMNS and "/" not in column and not column.startswith(TAG_PREFIX)


def _nothing_found(request: Listing) -> str:
    what = f"experiment '{request.experiment}' of {request.tracking_uri}"
    if request.where:
        return f"no training run in {what} matches (--where {' '.join(request.where)})"
    if request.sweep:
        return f"no training run in sweep {request.sweep} of {what}"
    return f"no training runs in {what} yet"


def show_run(tracking_uri: str, reference: str) -> str:
    """One run on one screen: what it is, its final metrics, tags, data, code, config
    and the commands that act on it."""
    details = _details(tracking_uri, [reference])[0]
    took = duration((details.end_time - details.start_time) / 1000) if details.end_time else ""
    head = {
        "run": f"{details.run_id}  {details.name}",
        "status": f"{details.status}, started {moment(details.start_time)}"
        + (f", took {took}" if took else ""),
        "note": details.note or "",
        "sweep": details.sweep or "",
        "commit": details.commit or "unknown",
        "backend": " on ".join(
            details.tags[t] for t in ("keras.backend", "device.kind") if t in details.tags
        ),
        "artifacts": details.artifact_uri,
    }
    lines = key_value_lines({k: v for k, v in head.items() if v}, indent=0)
    lines += ["", "final metrics", *key_value_lines({k: metric(v) for k, v in _finals(details)})]
    lines += ["", "data", *key_value_lines(_data_lines(details))]
    user_tags = {k: v for k, v in details.tags.items() if not k.startswith("mlflow.")}
    lines += ["", "tags", *key_value_lines(user_tags)]
    config = compact_yaml(details.config_yaml) if details.config_yaml else "(not logged)"
    lines += ["", "config", *("  " + line for line in config.rstrip().splitlines())]
    lines += ["", "commands", *key_value_lines(_commands(details, tracking_uri))]
    return "\n".join(lines)


def diff_runs(tracking_uri: str, references: list[str]) -> str:
    """What differs between two or more runs: config values, the final metrics side by
    side with each one's difference from the first run, and provenance (commit, data,
    package versions, backend, device). Equal keys are not listed."""
    if len(references) < 2:
        raise ConfigError("runs diff: give two or more run ids")
    runs = _details(tracking_uri, references)
    headers = [run.run_id[:8] for run in runs]
    config = _differing(runs, lambda run: run.params)
    names = sorted({name for run in runs for name in run.metrics if _is_final(name)})
    metrics = [(name, [run.metrics.get(name) for run in runs]) for name in names]
    provenance = _differing(runs, lambda run: run.provenance())
    title = "  ".join(f"{h} = {run.name}" for h, run in zip(headers, runs, strict=True))
    return "\n".join(
        [
            title,
            "",
            f"config: {len(config)} key(s) differ",
            side_by_side(config, headers),
            "",
            "metrics",
            side_by_side(metrics, headers, with_delta=True),
            "",
            f"provenance: {len(provenance)} difference(s)",
            side_by_side(provenance, headers),
        ]
    )


def _differing(runs: list[RunDetails], values_of) -> list[tuple[str, list[object]]]:
    """The keys whose values are not the same in every run, with each run's value."""
    keys = sorted({key for run in runs for key in values_of(run)})
    rows = []
    for key in keys:
        values = [values_of(run).get(key) for run in runs]
        if len({shown(value) for value in values}) > 1:
            rows.append((key, values))
    return rows


def _is_final(name: str) -> bool:
    return name.startswith(("final/", "time/")) and not name.startswith("final/test_f1/")


def compact_yaml(text: str) -> str:
    """A config's YAML with its lists on one line each (``hidden_units: [256, 128]``)."""
    import yaml

    return yaml.safe_dump(yaml.safe_load(text), default_flow_style=None, sort_keys=False)


def _finals(details: RunDetails) -> list[tuple[str, float]]:
    return [(name, value) for name, value in details.metrics.items() if _is_final(name)]


def _data_lines(details: RunDetails) -> dict[str, str]:
    sizes = {
        split: details.tags.get(f"dataset.{split}_samples") for split in ("train", "val", "test")
    }
    lines = {d.context: f"{d.name}, digest {d.digest}" for d in details.data}
    counted = " / ".join(f"{n} {split}" for split, n in sizes.items() if n)
    if counted:
        lines["sizes"] = counted
    if "dataset.source" in details.tags:
        lines["source"] = details.tags["dataset.source"]
    return lines


def _commands(details: RunDetails, tracking_uri: str) -> dict[str, str]:
    """The commands that act on the run, with the store named when it is not the default."""
    store = "" if tracking_uri == DEFAULT_STORE else tracking_uri
    hydra_store = f" {shlex.quote(f'tracking.uri={override_value(store)}')}" if store else ""
    cli_store = f" --tracking-uri {shlex.quote(store)}" if store else ""
    run_id = details.run_id
    commands = {"rerun": f"python -m mnist_exp.run rerun={run_id}{hydra_store}"}
    if details.status in ("KILLED", "FAILED") and "last_completed_epoch" in details.tags:
        commands["resume"] = f"python -m mnist_exp.run resume={run_id}{hydra_store}"
    if details.status == "FINISHED" and details.params.get("tracking.log_model") is not False:
        commands["evaluate"] = f"python -m mnist_exp.evaluate run_id={run_id}{hydra_store}"
        commands["predict"] = f"python -m mnist_exp.predict {run_id} IMAGE ...{cli_store}"
    return commands


def _details(tracking_uri: str, references: list[str]) -> list[RunDetails]:
    """The details of each run named (by id or unique prefix) in the store."""
    uri = absolute_store_uri(tracking_uri)
    client = open_client(uri)
    return [run_details(client, resolve_run(client, uri, reference)) for reference in references]
