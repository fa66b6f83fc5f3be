"""The config reference, ``docs/config.md``, generated from the schema and the options in conf/.

Every key's type, default, allowed values and meaning come from the dataclasses of
:mod:`mnist_exp.config.schema`; each group's options (the files in ``conf/<group>/``), what
they are and what they set come from those files. Never edit ``docs/config.md`` by hand;
after changing the schema or a config file, regenerate it from the repository root::

    python -m mnist_exp.config.reference           # writes docs/config.md
    python -m mnist_exp.config.reference --check   # exit 1 if docs/config.md is stale

``tests/test_project.py`` fails while the committed page differs from what this writes.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import re
import sys
from collections.abc import Iterator
from importlib import resources
from importlib.abc import Traversable
from pathlib import Path
from typing import Any

from omegaconf import OmegaConf

from mnist_exp.config.schema import (
    MODELS,
    OPTIMIZERS,
    VARIANTS,
    DataConfig,
    EvaluateConfig,
    RunConfig,
    TrackingConfig,
    TrainConfig,
    describe_allowed,
    own_fields,
)

OUTPUT = Path("docs/config.md")
REGENERATE = "python -m mnist_exp.config.reference"
# Groups of conf/ that hold no schema keys: their options and what they are, and whether to
# show what each sets (a preset sets keys; a sweep or a launcher sets hydra.* only).
OPTION_GROUPS = {
    "experiment": ("Presets (`experiment=NAME`)", True),
    "sweep": ("Sweeps (`-m +sweep=NAME`)", False),
    "hydra/launcher": ("Launchers (`-m hydra/launcher=NAME`)", False),
}


def conf_dir() -> Traversable:
    """The packaged configs, ``mnist_exp.conf`` (``conf/`` in a checkout)."""
    return resources.files("mnist_exp.conf")


def render() -> str:
    """The whole reference page, as Markdown."""
    chosen = _chosen_options("config")
    parts = [
        "# Config reference",
        "",
        "Every key a run or an evaluation reads: its type, its default, what is allowed and",
        "what it means. Set any key on the command line (`train.epochs=20`), pick an option",
        "of a group (`model=cnn`), or both; `python -m mnist_exp.run --cfg job` shows the",
        "config a run would use. A value outside what is allowed, or a key the schema lacks,",
        "stops the command with a one-line error before anything runs.",
        "",
        "A group's defaults are its schema's; each option (a file in `conf/GROUP/`) sets",
        "only what it changes, listed in the group's options table.",
        "",
        f"This page is generated from `mnist_exp/config/schema.py` and `conf/` by `{REGENERATE}`;",
        "do not edit it by hand.",
        "",
        "## Top level",
        "",
        _table("", own_fields(RunConfig)),
        "",
        *_group_section("data", DataConfig, chosen),
        *_model_section(chosen),
        *_optimizer_section(chosen),
        *_group_section("train", TrainConfig, chosen),
        *_group_section("tracking", TrackingConfig, chosen),
        *_evaluate_section(),
    ]
    for group, (title, sets) in OPTION_GROUPS.items():
        parts += [
            f"## {title}",
            "",
            f"Files in `conf/{group}/`.",
            "",
            _options_table(group, None, sets),
            "",
        ]
    return "\n".join(parts).rstrip("\n") + "\n"


def _group_section(group: str, schema: type, chosen: dict[str, str]) -> list[str]:
    return [
        f"## `{group}`",
        "",
        f"Schema `{schema.__name__}`. {_first_line(schema)}",
        "",
        _table(f"{group}.", dataclasses.fields(schema)),
        "",
        f"Options (`{group}=NAME`, files in `conf/{group}/`):",
        "",
        _options_table(group, chosen.get(group)),
        "",
    ]


def _model_section(chosen: dict[str, str]) -> list[str]:
    key, default, _ = VARIANTS["model"]
    base = MODELS[default]
    lines = [
        "## `model`",
        "",
        f"`model.{key}` picks the schema: `{base.__name__}` for `{default}`; the other types",
        "add keys of their own, allowed only with that type.",
        "",
        _table("model.", dataclasses.fields(base)),
        "",
    ]
    base_keys = {f.name for f in dataclasses.fields(base)}
    for variant, schema in MODELS.items():
        extra = [f for f in dataclasses.fields(schema) if f.name not in base_keys]
        if schema is base or not extra:
            continue
        lines += [
            f"### Only with `model.{key}={variant}`",
            "",
            f"Schema `{schema.__name__}`. {_first_line(schema)}",
            "",
            _table("model.", extra),
            "",
        ]
    lines += [
        "Options (`model=NAME`, files in `conf/model/`):",
        "",
        _options_table("model", chosen.get("model")),
        "",
    ]
    return lines


def _optimizer_section(chosen: dict[str, str]) -> list[str]:
    key, _, _ = VARIANTS["optimizer"]
    lines = [
        "## `optimizer`",
        "",
        f"Each optimizer has its own schema and accepts only its own keys: `optimizer.{key}`",
        "(set by the option) picks it.",
        "",
        "Options (`optimizer=NAME`, files in `conf/optimizer/`):",
        "",
        _options_table("optimizer", chosen.get("optimizer")),
        "",
    ]
    for name, schema in OPTIMIZERS.items():
        lines += [
            f"### `optimizer={name}`",
            "",
            f"Schema `{schema.__name__}`, Keras class `keras.optimizers.{schema.keras_class}`. "
            f"{_first_line(schema)}",
            "",
            _table("optimizer.", dataclasses.fields(schema)),
            "",
        ]
    return lines


def _evaluate_section() -> list[str]:
    chosen = _chosen_options("evaluate")
    picked = ", ".join(f"`{group}={option}`" for group, option in chosen.items())
    return [
        "## `evaluate`",
        "",
        "The keys of `python -m mnist_exp.evaluate` (`conf/evaluate.yaml`, schema",
        f"`{EvaluateConfig.__name__}`): its own, and `data.*` and `tracking.*` as above",
        f"(by default {picked}).",
        "",
        _table("", own_fields(EvaluateConfig)),
        "",
    ]


def _table(prefix: str, fields: list[dataclasses.Field] | tuple[dataclasses.Field, ...]) -> str:
    rows = ["| key | type | default | allowed | meaning |", "|---|---|---|---|---|"]
    for field in fields:
        default = field.default_factory() if callable(field.default_factory) else field.default
        cells = [
            f"`{prefix}{field.name}`",
            _type(field),
            f"`{_value(default)}`",
            _escape(_allowed(prefix, field)),
            _escape(field.metadata["help"]),
        ]
        rows.append("| " + " | ".join(cells) + " |")
    return "\n".join(rows)


def _type(field: dataclasses.Field) -> str:
    words = str(field.type).replace(" | None", " or null")
    return " or ".join(f"`{word}`" for word in words.split(" or "))


def _allowed(prefix: str, field: dataclasses.Field) -> str:
    for group, (key, _, schemas) in VARIANTS.items():
        if prefix == f"{group}." and field.name == key:
            return "one of: " + ", ".join(schemas)
    return describe_allowed(field)


def _value(value: Any) -> str:
    """A value as it is written in YAML and on the command line."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, list | tuple):
        items = (json.dumps(item) if isinstance(item, str) else _value(item) for item in value)
        return "[" + ", ".join(items) + "]"
    return str(value)


def _escape(text: str) -> str:
    """Text safe in a Markdown table cell: no column breaks, nothing read as an HTML tag."""
    text = text.replace("|", "\\|").replace("*", "\\*")
    return re.sub(r"<(?=[A-Za-z/!?])", "&lt;", text)


def _first_line(cls: type) -> str:
    """The first paragraph of a schema's docstring, in Markdown."""
    return " ".join((cls.__doc__ or "").split("\n\n")[0].split()).replace("``", "`")


def _chosen_options(primary: str) -> dict[str, str]:
    """The option each group takes by default in ``conf/<primary>.yaml``."""
    cfg = OmegaConf.load(conf_dir().joinpath(f"{primary}.yaml").open(encoding="utf-8"))
    chosen = {}
    for entry in cfg.get("defaults", []):
        if not isinstance(entry, str):
            chosen |= {str(k): str(v) for k, v in entry.items() if v is not None}
    return chosen


def _options(group: str) -> Iterator[tuple[str, Traversable]]:
    folder = conf_dir()
    for part in group.split("/"):
        folder = folder.joinpath(part)
    found = [entry for entry in folder.iterdir() if entry.name.endswith(".yaml")]
    for entry in sorted(found, key=lambda entry: entry.name):
        yield entry.name.removesuffix(".yaml"), entry


def _options_table(group: str, default: str | None, sets: bool = True) -> str:
    """A table of the group's options: name, leading comment and (with ``sets``) the
    values and group choices each sets."""
    rows = ["| option | what it is |", "|---|---|"]
    if sets:
        rows = ["| option | what it is | what it sets |", "|---|---|---|"]
    for name, path in _options(group):
        text = path.read_text(encoding="utf-8")
        label = f"`{name}` (default)" if name == default else f"`{name}`"
        cells = [label, _escape(_description(text))]
        if sets:
            package = "" if "@package _global_" in text else group.replace("/", ".") + "."
            shown = [f"`{setting}`" for setting in _settings(text, package)]
            cells.append(", ".join(shown) or "nothing: the schema's defaults")
        rows.append("| " + " | ".join(cells) + " |")
    return "\n".join(rows)


def _description(text: str) -> str:
    """The option file's leading comment, example command lines (indented) left out."""
    lines = []
    for line in text.splitlines():
        if not line.startswith("#"):
            break
        body = line.removeprefix("#")
        if "@package" in body or body.startswith("   "):
            continue
        lines.append(body.strip())
    return " ".join(line for line in lines if line)


def _settings(text: str, prefix: str) -> list[str]:
    """What an option file sets: ``group=option`` for each override in its defaults list,
    then ``key=value`` for each value (the ``hydra`` node aside)."""
    cfg = OmegaConf.to_container(OmegaConf.create(text), resolve=False)
    found = []
    for entry in cfg.pop("defaults", []):
        if isinstance(entry, dict):
            found += [
                f"{key.removeprefix('override ').strip('/')}={value}"
                for key, value in entry.items()
            ]
    cfg.pop("hydra", None)
    found += [f"{key}={_value(value)}" for key, value in _flatten(cfg, prefix)]
    return found


def _flatten(node: dict, prefix: str) -> Iterator[tuple[str, Any]]:
    for key, value in node.items():
        if isinstance(value, dict):
            yield from _flatten(value, f"{prefix}{key}.")
        else:
            yield f"{prefix}{key}", value


def main(argv: list[str] | None = None) -> int:
    """Write the reference page, or with ``--check`` say whether the written one is current."""
    parser = argparse.ArgumentParser(prog="python -m mnist_exp.config.reference")
    parser.add_argument("--check", action="store_true", help="compare instead of writing")
    parser.add_argument("--output", type=Path, default=OUTPUT, help="default: %(default)s")
    args = parser.parse_args(argv)
    page = render()
    if args.check:
        current = args.output.read_text(encoding="utf-8") if args.output.exists() else ""
        if current != page:
            print(f"{args.output} is stale: regenerate it with {REGENERATE}", file=sys.stderr)
            return 1
        print(f"{args.output} is up to date")
        return 0
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(page, encoding="utf-8")
    print(f"wrote {args.output}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
