"""Configs cannot make Hydra or logging import and call code outside the allow-lists.

Attacks through the real CLI (in subprocesses): a callback, a preset from a --config-dir,
a task-config _target_, a logging class, a sweep job's own preset. Each must end with one
line and exit code 2 before anything is instantiated: no file touched, no MLflow run. So
must environment variables outside the allow-list (LD_PRELOAD, PYTHONPATH), log handlers
that send records away, log files outside the run's folder or not appended to, and a
preset that is not valid YAML (most of these in-process, through ``one_line_error``). And
everything this project ships (every launcher, sweeper, sampler and logging option but
Hydra's hydra_debug, which truncates a log in the working folder) still composes
(tests/test_sweep.py runs grid, Optuna and joblib sweeps through the same check).
"""

from __future__ import annotations

import pickle
import textwrap
from pathlib import Path

import pytest
from conftest import one_line_error, run_cli
from hydra import compose, initialize_config_module
from hydra.core.global_hydra import GlobalHydra
from hydra.errors import InstantiationException

from mnist_exp.config import targets
from mnist_exp.config.schema import ConfigError
from mnist_exp.errors import describe_hydra_error

CONF = Path(__file__).resolve().parents[2] / "conf"


def refused(args: list[str], tmp_path: Path, module: str = "mnist_exp.run") -> str:
    """Run the CLI with ``args`` (and a config error of its own, so that nothing would
    train if the attack got through); assert one error line and exit 2; return the line."""
    # evaluate without run_id or model_uri stops in its task, before loading anything
    stop = ["model.dropout=1.5"] if module == "mnist_exp.run" else []
    done = run_cli(
        [
            *args,
            *stop,
            f"hydra.run.dir={tmp_path / 'run'}",
            f"tracking.uri=sqlite:///{tmp_path / 'mlflow.db'}",
        ],
        cwd=tmp_path,
        timeout=120,
        module=module,
    )
    lines = done.stderr.splitlines()
    assert done.returncode == 2, done.stderr
    assert len(lines) == 1 and lines[0].startswith("error: "), done.stderr
    assert "Traceback" not in done.stdout + done.stderr
    assert not (tmp_path / "mlflow.db").exists()
    assert not (tmp_path / "run").exists()  # refused before Hydra made the run's folder
    return lines[0]


@pytest.fixture
def victim(tmp_path: Path) -> Path:
    """A file an attack would truncate or overwrite; it must still say "precious"."""
    path = tmp_path / "victim"
    path.write_text("precious")
    return path


def file_opening_formatter(path: Path) -> str:
    """A preset whose log formatter is a FileHandler: building it would open (truncate or
    create) ``path``, named as its format string, in mode "w"."""
    return f"""\
        # @package _global_
        hydra:
          job_logging:
            formatters:
              simple:
                class: logging.FileHandler
                format: {path}
                datefmt: w
        """


def config_dir(tmp_path: Path, files: dict[str, str]) -> Path:
    """A --config-dir holding ``files`` (relative path: YAML text)."""
    root = tmp_path / "shared_conf"
    for name, text in files.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text(textwrap.dedent(text))
    return root


@pytest.mark.parametrize("module", ["mnist_exp.run", "mnist_exp.evaluate"])
def test_callback_that_opens_a_file_is_refused_before_it_truncates_it(tmp_path, victim, module):
    line = refused(
        ["+hydra.callbacks.x._target_=builtins.open", f"+hydra.callbacks.x._args_=[{victim},w]"],
        tmp_path,
        module,
    )
    assert line == (
        "error: hydra.callbacks.x._target_=builtins.open: not allowed; "
        "allowed targets: mnist_exp.pipeline.sweep.SweepCallback"
    )
    assert victim.read_text() == "precious"


def test_callback_that_copies_a_file_is_refused(tmp_path):
    source, copy = tmp_path / "secret", tmp_path / "copy"
    source.write_text("secret")
    line = refused(
        [
            "+hydra.callbacks.x._target_=shutil.copyfile",
            f"+hydra.callbacks.x._args_=[{source},{copy}]",
        ],
        tmp_path,
    )
    assert line.startswith("error: hydra.callbacks.x._target_=shutil.copyfile: not allowed;")
    assert not copy.exists()


def test_shared_preset_from_a_config_dir_is_refused(tmp_path, victim):
    preset = f"""\
        # @package _global_
        hydra:
          callbacks:
            x:
              _target_: builtins.open
              _args_: [{victim}, w]
        """
    shared = config_dir(tmp_path, {"experiment/evil.yaml": preset})
    line = refused(["--config-dir", str(shared), "experiment=evil"], tmp_path)
    assert line.startswith("error: hydra.callbacks.x._target_=builtins.open: not allowed;")
    assert victim.read_text() == "precious"


@pytest.mark.parametrize(
    ("override", "expected"),
    [
        (
            "+model._target_=builtins.print",
            "error: model._target_=builtins.print: not allowed; allowed targets: none here",
        ),
        (
            "hydra.launcher._target_=builtins.print",
            "error: hydra.launcher._target_=builtins.print: not allowed; allowed targets: "
            "hydra._internal.core_plugins.basic_launcher.BasicLauncher, ",
        ),
        (
            "+hydra.callbacks.mlflow_sweep._args_=[{_target_:builtins.print}]",
            "error: hydra.callbacks.mlflow_sweep._args_[0]._target_=builtins.print: not allowed",
        ),
        (
            "+hydra.callbacks.x._target_=${oc.env:SNEAKY_TARGET}",  # resolved, then checked
            "error: hydra.callbacks.x._target_=shutil.copyfile: not allowed",
        ),
        (
            "+hydra.launcher.ray.init.runtime_env.pip=[evil]",
            "error: hydra.launcher.ray.init.runtime_env.pip=['evil']: not allowed; "
            "allowed keys here: config, env_vars, worker_process_setup_hook",
        ),
    ],
)
def test_targets_outside_the_allow_list_are_refused_anywhere(tmp_path, override, expected):
    extra = ["hydra/launcher=cluster"] if "ray" in override else []
    done = run_cli(
        [override, *extra, "model.dropout=1.5", f"hydra.run.dir={tmp_path / 'run'}"],
        cwd=tmp_path,
        timeout=120,
        env={"SNEAKY_TARGET": "shutil.copyfile"},
    )
    assert done.returncode == 2, done.stderr
    assert done.stderr.splitlines() == [done.stderr.strip()], done.stderr
    assert done.stderr.startswith(expected), done.stderr


@pytest.mark.slow
def test_logging_classes_factories_and_ext_values_outside_logging_are_refused(tmp_path, victim):
    # A formatter built by a handler class would open (and truncate) its "format" path.
    formatter = file_opening_formatter(victim)
    factory = """\
        # @package _global_
        hydra:
          hydra_logging:
            formatters:
              simple:
                (): builtins.print
        """
    job_logging = """\
        version: 1
        handlers:
          h:
            class: logging.config.fileConfig
            fname: nowhere.ini
        root:
          handlers: [h]
        """
    shared = config_dir(
        tmp_path,
        {
            "experiment/formatter.yaml": formatter,
            "experiment/factory.yaml": factory,
            "hydra/job_logging/evil.yaml": job_logging,
        },
    )
    cases = {
        "experiment=formatter": (
            "error: hydra.job_logging.formatters.simple.class=logging.FileHandler: not allowed; "
            "allowed classes: logging.Formatter"
        ),
        "experiment=factory": (
            "error: hydra.hydra_logging.formatters.simple.()=builtins.print: not allowed; "
            "no () factories in logging configs"
        ),
        "hydra/job_logging=evil": (
            "error: hydra.job_logging.handlers.h.class=logging.config.fileConfig: not allowed; "
            "allowed classes: logging.FileHandler, logging.NullHandler, logging.StreamHandler"
        ),
        "+hydra.job_logging.handlers.x.class=shutil.copyfile": (
            "error: hydra.job_logging.handlers.x.class=shutil.copyfile: not allowed;"
        ),
        "hydra.job_logging.handlers.console.stream=ext://os.system": (
            "error: hydra.job_logging.handlers.console.stream=ext://os.system: not allowed; "
            "allowed ext:// values: ext://sys.stderr, ext://sys.stdout"
        ),
    }
    for override, expected in cases.items():
        line = refused(["--config-dir", str(shared), override], tmp_path)
        assert line.startswith(expected), (override, line)
    assert victim.read_text() == "precious"


@pytest.mark.slow
def test_a_sweep_job_preset_is_checked_in_the_joblib_worker(tmp_path):
    """A job's own config (here: an Optuna trial picking a preset) is refused before any
    job runs: the search-space check composes every choice in the launching process (and
    joblib's worker process would check it too, see the next test); the formatter would
    create ``victim``."""
    victim = tmp_path / "victim"
    preset = file_opening_formatter(victim)
    shared = config_dir(tmp_path, {"experiment/evil.yaml": preset})
    done = run_cli(
        [
            "-m",
            "--config-dir",
            str(shared),
            "+sweep=optuna_mlp",
            "hydra.sweeper.n_trials=1",
            "hydra.sweeper.n_jobs=1",
            "+hydra.sweeper.params.experiment='choice(evil)'",
            "hydra/launcher=joblib",
            "hydra.launcher.n_jobs=2",  # 1 would run the job in this process, not a worker
            f"hydra.sweep.dir={tmp_path / 'sweep'}",
            f"tracking.uri=sqlite:///{tmp_path / 'mlflow.db'}",
            f"tracking.artifact_location={tmp_path / 'art'}",
        ],
        cwd=tmp_path,
        timeout=300,
    )
    errors = [line for line in done.stderr.splitlines() if line.startswith("error: ")]
    assert done.returncode == 2, done.stderr
    assert errors == [
        "error: experiment=choice(evil): bad search space: "
        "hydra.job_logging.formatters.simple.class=logging.FileHandler: not allowed; "
        "allowed classes: logging.Formatter"
    ], done.stderr
    assert "Traceback" not in done.stderr
    assert not victim.exists()
    assert not list((tmp_path / "sweep").rglob("*.log"))  # no job got as far as logging


def test_loader_pickles_by_reference_so_workers_check_too():
    targets.install()
    GlobalHydra.instance().clear()
    with initialize_config_module("mnist_exp.conf", version_base="1.3"):
        loader = GlobalHydra.instance().config_loader()
        assert type(loader) is targets.CheckingConfigLoader
        assert b"mnist_exp.config.targets" in pickle.dumps(loader)
        with pytest.raises(ConfigError, match=r"^model\._target_=x\.y: not allowed"):
            compose("config", overrides=["+model._target_=x.y"])


def test_default_config_shows(tmp_path):
    done = run_cli(["--cfg", "job"], cwd=tmp_path, timeout=120)
    assert done.returncode == 0, done.stderr
    assert "seed: 42" in done.stdout


def test_optuna_sweep_config_composes(tmp_path):
    done = run_cli(["--cfg", "hydra", "+sweep=optuna_mlp"], cwd=tmp_path, timeout=120)
    assert done.returncode == 0, done.stderr
    assert "sampler: tpe" in done.stdout
    assert "_target_: hydra_plugins.mnist_exp_optuna.optuna_sweeper.OptunaSweeper" in (done.stdout)


def _options(group: str) -> list[str]:
    options = sorted(path.stem for path in (CONF / group).glob("*.yaml"))
    assert options, f"no options found for {group} under {CONF}"
    return options


SHIPPED = [
    *[
        [f"hydra/launcher={name}"]
        for name in ["basic", "joblib", "ray", *_options("hydra/launcher")]
    ],
    *[
        ["hydra/sweeper=optuna", f"hydra.sweeper.sampler={name}"]
        for name in ["tpe", "random", "qmc"]
    ],
    *[[f"hydra/job_logging={name}"] for name in ["default", "disabled", "none", "stdout"]],
    *[[f"hydra/hydra_logging={name}"] for name in ["default", "disabled", "none"]],
    *[[f"+sweep={name}"] for name in _options("sweep")],
    *[[f"experiment={name}"] for name in _options("experiment")],
]


@pytest.mark.parametrize("overrides", SHIPPED, ids=lambda o: " ".join(o))
def test_every_shipped_option_composes(overrides):
    """Every launcher, sweeper, sampler, logging option and preset passes the check."""
    targets.install()
    with initialize_config_module("mnist_exp.conf", version_base="1.3"):
        cfg = compose("config", overrides=overrides, return_hydra_config=True)
    targets.check_targets(cfg)


def test_ray_aws_launcher_is_not_allowed():
    targets.install()
    with (
        initialize_config_module("mnist_exp.conf", version_base="1.3"),
        pytest.raises(ConfigError, match=r"^hydra\.launcher\._target_=.*RayAWSLauncher: not"),
    ):
        compose("config", overrides=["hydra/launcher=ray_aws"], return_hydra_config=True)


def test_hydra_multi_line_errors_become_one_whole_line():
    blocked = InstantiationException(
        "Target 'os.remove' is blocklisted and cannot be instantiated from config\n"
        "to prevent security vulnerabilities, set env var\n"
        "HYDRA_INSTANTIATE_ALLOWLIST_OVERRIDE=os.remove:<other allowlisted targets> to bypass\n"
        "full_key: hydra.callbacks.x"
    )
    assert describe_hydra_error(blocked) == (
        "Target 'os.remove' is blocklisted and cannot be instantiated from config to prevent "
        "security vulnerabilities, set env var HYDRA_INSTANTIATE_ALLOWLIST_OVERRIDE=os.remove:"
        "<other allowlisted targets> to bypass full_key: hydra.callbacks.x"
    )
    one_line = InstantiationException("Error locating target 'a.b',  kept  as is")
    assert describe_hydra_error(one_line) == "Error locating target 'a.b',  kept  as is"


# Environment variables: hydra.job.env_set reaches the job's process and the processes it
# starts, runtime_env.env_vars a Ray worker's; LD_PRELOAD or PYTHONPATH would load code there.
ENV_ALLOWED = (
    "allowed keys here: MNIST_EXP_*, CUDA_VISIBLE_DEVICES, MKL_NUM_THREADS, "
    "MLFLOW_TRACKING_URI, OMP_NUM_THREADS, OPENBLAS_NUM_THREADS, TF_CPP_MAX_VLOG_LEVEL, "
    "TF_CPP_MIN_LOG_LEVEL, XLA_PYTHON_CLIENT_MEM_FRACTION, XLA_PYTHON_CLIENT_PREALLOCATE"
)


@pytest.mark.parametrize(
    ("override", "shown"),
    [
        (
            "+hydra.job.env_set.LD_PRELOAD=/path/evil.so",
            "hydra.job.env_set.LD_PRELOAD=/path/evil.so",
        ),
        ("+hydra.job.env_set.PYTHONPATH=/tmp/evil", "hydra.job.env_set.PYTHONPATH=/tmp/evil"),
        ("+hydra.job.env_set.PATH=/tmp/evil", "hydra.job.env_set.PATH=/tmp/evil"),
        ("+hydra.job.env_set.ld_preload=x", "hydra.job.env_set.ld_preload=x"),
        # --xla_gpu_cuda_data_dir makes XLA run ptxas from a folder of the config's choosing
        (
            "+hydra.job.env_set.XLA_FLAGS='--xla_gpu_cuda_data_dir=/tmp/evil'",
            "hydra.job.env_set.XLA_FLAGS=--xla_gpu_cuda_data_dir=/tmp/evil",
        ),
        ("+hydra.job.env_set.KERAS_BACKEND=torch", "hydra.job.env_set.KERAS_BACKEND=torch"),
        (
            "+hydra.launcher.ray.init.runtime_env.env_vars.LD_PRELOAD=/path/evil.so",
            "hydra.launcher.ray.init.runtime_env.env_vars.LD_PRELOAD=/path/evil.so",
        ),
    ],
)
def test_env_keys_outside_the_allow_list_are_refused(tmp_path, override, shown):
    extra = ["hydra/launcher=cluster"] if "ray" in override else []
    line = one_line_error(tmp_path, override, *extra, "model.dropout=1.5")
    assert line.startswith(f"error: {shown}"), line
    assert line.endswith(f": not allowed; {ENV_ALLOWED}"), line


def test_env_keys_in_a_shared_preset_are_refused(tmp_path):
    preset = """\
        # @package _global_
        hydra:
          job:
            env_set:
              MNIST_EXP_FINE: "1"
              LD_PRELOAD: /path/evil.so
        """
    shared = config_dir(tmp_path, {"experiment/evil.yaml": preset})
    line = one_line_error(
        tmp_path, "--config-dir", str(shared), "experiment=evil", "model.dropout=1.5"
    )
    assert line == f"error: hydra.job.env_set.LD_PRELOAD=/path/evil.so: not allowed; {ENV_ALLOWED}"


def test_an_env_set_that_resolves_only_later_is_refused(tmp_path):
    line = one_line_error(
        tmp_path, "++hydra.job.env_set=${hydra.runtime.output_dir}", "model.dropout=1.5"
    )
    assert line == (
        "error: hydra.job.env_set=${hydra.runtime.output_dir}: not allowed; "
        "an interpolation here must resolve when the config is composed"
    )


def test_project_and_harmless_env_keys_compose():
    """The keys the sweep callback, the Optuna sweeper and hydra/launcher=cluster set,
    and the harmless ones."""
    targets.install()
    overrides = [
        "hydra/launcher=cluster",
        "++hydra.job.env_set.MNIST_EXP_SWEEP_PARENT_RUN=abc",
        "++hydra.job.env_set.MNIST_EXP_OPTUNA_STORAGE='sqlite:///x.db'",
        "+hydra.job.env_set.OMP_NUM_THREADS=2",
        "+hydra.job.env_set.TF_CPP_MIN_LOG_LEVEL=3",
        "+hydra.job.env_set.CUDA_VISIBLE_DEVICES=0",
        "+hydra.launcher.ray.init.runtime_env.env_vars.XLA_PYTHON_CLIENT_PREALLOCATE=false",
    ]
    with initialize_config_module("mnist_exp.conf", version_base="1.3"):
        cfg = compose("config", overrides=overrides, return_hydra_config=True)
    targets.check_targets(cfg)
    assert set(cfg.hydra.launcher.ray.init.runtime_env.env_vars) >= {
        "MLFLOW_TRACKING_URI",
        "MNIST_EXP_LAUNCH_DIR",
    }


# Logging: only stream, file and null handlers; files only appended to, only inside the
# run's folder. (In-process runs use hydra/job_logging=none, so F is the only handler.)
F = "+hydra.job_logging.handlers.f"
HANDLERS = "allowed classes: logging.FileHandler, logging.NullHandler, logging.StreamHandler"
LOG_FILE = "allowed: ${hydra.runtime.output_dir}/<name>.log (a file in the run's folder)"


@pytest.mark.parametrize(
    ("overrides", "expected"),
    [
        (
            [f"{F}.class=logging.handlers.HTTPHandler", f"{F}.host=example.org", f"{F}.url=/"],
            f"hydra.job_logging.handlers.f.class=logging.handlers.HTTPHandler: not allowed; "
            f"{HANDLERS}",
        ),
        (
            [
                "+hydra.hydra_logging.handlers.f.class=logging.handlers.SocketHandler",
                "+hydra.hydra_logging.handlers.f.host=example.org",
                "+hydra.hydra_logging.handlers.f.port=9020",
            ],
            f"hydra.hydra_logging.handlers.f.class=logging.handlers.SocketHandler: not allowed; "
            f"{HANDLERS}",
        ),
        (
            [
                f"{F}.class=logging.FileHandler",
                f"{F}.filename=${{hydra.runtime.output_dir}}/x.log",
                f"{F}.mode=w",
            ],
            "hydra.job_logging.handlers.f.mode=w: not allowed; allowed: a (log files are "
            "only appended to)",
        ),
        (
            [f"{F}.class=logging.FileHandler", f"{F}.filename=../../x.log"],
            f"hydra.job_logging.handlers.f.filename=../../x.log: not allowed; {LOG_FILE}",
        ),
        (
            [f"{F}.class=logging.FileHandler", f"{F}.filename=/tmp/x.log"],
            f"hydra.job_logging.handlers.f.filename=/tmp/x.log: not allowed; {LOG_FILE}",
        ),
        (  # relative to the folder the command runs in, not the run's
            [f"{F}.class=logging.FileHandler", f"{F}.filename=x.log"],
            f"hydra.job_logging.handlers.f.filename=x.log: not allowed; {LOG_FILE}",
        ),
        (
            [
                f"{F}.class=logging.FileHandler",
                f"{F}.filename=${{hydra.runtime.output_dir}}/../x.log",
            ],
            "hydra.job_logging.handlers.f.filename=${hydra.runtime.output_dir}/../x.log: not "
            f"allowed; {LOG_FILE}",
        ),
        (
            [
                f"{F}.class=logging.FileHandler",
                f"{F}.filename=${{hydra.runtime.output_dir}}/${{hydra.job.name}}.log",
                "hydra.job.name=../../x",
            ],
            "hydra.job_logging.handlers.f.filename=${hydra.runtime.output_dir}/../../x.log: not "
            f"allowed; {LOG_FILE}",
        ),
        (
            [f"{F}.class=logging.FileHandler", f"{F}.filename=${{hydra.runtime.output_dir}}/x.sh"],
            "hydra.job_logging.handlers.f.filename=${hydra.runtime.output_dir}/x.sh: not "
            f"allowed; {LOG_FILE}",
        ),
        (
            [f"{F}.class=logging.FileHandler"],
            f"hydra.job_logging.handlers.f: a logging.FileHandler needs a filename; {LOG_FILE}",
        ),
        (
            [f"{F}.filename=null"],
            f"hydra.job_logging.handlers.f: a handler needs a class; {HANDLERS}",
        ),
        (
            [f"{F}.class=logging.StreamHandler", f"{F}.filename=x.log"],
            "hydra.job_logging.handlers.f.filename=x.log: not allowed; allowed keys here: "
            "class, filters, formatter, level, stream",
        ),
    ],
)
def test_log_handlers_that_reach_too_far_are_refused(tmp_path, overrides, expected):
    line = one_line_error(tmp_path, *overrides, "model.dropout=1.5")
    assert line == f"error: {expected}"


def test_a_preset_file_handler_without_a_filename_is_one_line(tmp_path):
    preset = """\
        # @package _global_
        hydra:
          job_logging:
            handlers:
              f2:
                class: logging.FileHandler
        """
    shared = config_dir(tmp_path, {"experiment/x.yaml": preset})
    line = one_line_error(
        tmp_path, "--config-dir", str(shared), "experiment=x", "model.dropout=1.5"
    )
    assert line == (
        f"error: hydra.job_logging.handlers.f2: a logging.FileHandler needs a filename; {LOG_FILE}"
    )


def test_a_handler_cannot_set_its_attributes(tmp_path, victim):
    """dictConfig sets a handler's ``.`` entries as attributes after building it: a
    delayed FileHandler's baseFilename would be the file it opens at its first record."""
    preset = f"""\
        # @package _global_
        hydra:
          job_logging:
            handlers:
              f:
                class: logging.FileHandler
                filename: ${{hydra.runtime.output_dir}}/ok.log
                delay: true
                .:
                  baseFilename: {victim}
        """
    shared = config_dir(tmp_path, {"experiment/x.yaml": preset})
    line = one_line_error(
        tmp_path, "--config-dir", str(shared), "experiment=x", "model.dropout=1.5"
    )
    assert line.startswith("error: hydra.job_logging.handlers.f..={'baseFilename': "), line
    assert line.endswith(
        "not allowed; allowed keys here: class, delay, encoding, errors, filename, filters, "
        "formatter, level, mode"
    )


def test_hydra_debug_logging_is_refused():
    """Hydra's hydra/hydra_logging=hydra_debug truncates hydra-<job>.log in the folder the
    command runs in (hydra.verbose=true logs the same to the console)."""
    targets.install()
    with (
        initialize_config_module("mnist_exp.conf", version_base="1.3"),
        pytest.raises(ConfigError, match=r"^hydra\.hydra_logging\.handlers\.file\.mode=w: not"),
    ):
        compose("config", overrides=["hydra/hydra_logging=hydra_debug"], return_hydra_config=True)


def test_extra_log_files_in_the_run_folder_compose():
    targets.install()
    overrides = [
        "+hydra.job_logging.handlers.f.class=logging.FileHandler",
        "+hydra.job_logging.handlers.f.filename=${hydra.runtime.output_dir}/${hydra.job.name}-2.log",
        "+hydra.job_logging.handlers.f.mode=a",
        "+hydra.job_logging.handlers.n.class=logging.NullHandler",
    ]
    with initialize_config_module("mnist_exp.conf", version_base="1.3"):
        cfg = compose("config", overrides=overrides, return_hydra_config=True)
    targets.check_targets(cfg)


@pytest.mark.parametrize(
    "override",
    [
        "+hydra.job_logging.handlers.file.mode=w",
        "hydra.job_logging.handlers.file.filename=${hydra.runtime.output_dir}/../outside.log",
        "+hydra.job_logging.handlers.file.delay=true",  # allowed: the run goes on to its check
    ],
)
def test_the_run_log_is_neither_truncated_nor_moved(tmp_path, override):
    """Through the real CLI, with Hydra's default job logging: an existing run.log keeps
    its lines, and nothing is written beside the run's folder."""
    log = tmp_path / "run" / "run.log"
    log.parent.mkdir()
    log.write_text("precious\n")
    done = run_cli(
        [override, "model.dropout=1.5", f"hydra.run.dir={tmp_path / 'run'}"],
        cwd=tmp_path,
        timeout=120,
    )
    assert done.returncode == 2, done.stderr
    assert len(done.stderr.splitlines()) == 1, done.stderr
    assert log.read_text().startswith("precious\n")
    assert not (tmp_path / "outside.log").exists()


def test_a_logging_config_dict_config_cannot_apply_is_one_line(tmp_path):
    done = run_cli(
        ["hydra.job_logging.root.level=LOUD", f"hydra.run.dir={tmp_path / 'run'}"],
        cwd=tmp_path,
        timeout=120,
    )
    assert done.returncode == 2, done.stderr
    assert done.stderr.splitlines() == [
        "error: cannot apply hydra.job_logging or hydra.hydra_logging: Unable to configure "
        "root logger: Unknown level: 'LOUD'"
    ], done.stderr


def test_a_preset_that_is_not_yaml_is_one_line_naming_the_file(tmp_path):
    shared = config_dir(tmp_path, {"experiment/x.yaml": "model:\n  dropout: [0.1\n"})
    line = one_line_error(
        tmp_path, "--config-dir", str(shared), "experiment=x", "model.dropout=1.5"
    )
    assert line == (
        f"error: {shared / 'experiment' / 'x.yaml'}:3:1: not valid YAML: expected ',' or ']', "
        "but got '<stream end>' (while parsing a flow sequence at line 2, column 12)"
    )


def test_hydra_still_loads_configs_through_the_class_the_check_replaces():
    """targets.install swaps Hydra's private ConfigLoaderImpl (no public hook sees every
    composed config first): fail loudly, naming Hydra, the day a release moves it."""
    import hydra
    import hydra._internal.hydra as hydra_module
    from hydra._internal.config_loader_impl import ConfigLoaderImpl

    moved = f"Hydra {hydra.__version__} moved its config loader: update mnist_exp.config.targets"
    assert hasattr(hydra_module, "ConfigLoaderImpl"), moved
    assert callable(getattr(ConfigLoaderImpl, "load_configuration", None)), moved
    targets.install()
    assert hydra_module.ConfigLoaderImpl is targets.CheckingConfigLoader, moved
