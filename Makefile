# mnist-exp: every target sets up its own virtualenv (.venv) on first use.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
ARGS ?=
STORE ?= sqlite:///outputs/mlflow.db
PORT ?= 5000

.PHONY: install run test test-fast test-upgrade docs lint ui server bench bench-sweep bench-sweep-cost bench-search bench-study bench-runs clean

install: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --disable-pip-version-check -q --upgrade pip
	$(BIN)/python -m pip install --disable-pip-version-check -q -e ".[dev,docs,sweep,jax,cluster]"
	touch $@

## make run ARGS="model=mlp train.epochs=3": one experiment (Hydra overrides in ARGS)
run: install
	$(BIN)/python -m mnist_exp.run $(ARGS)

## make test: the whole test suite, one worker per core plus one (offline, about 13 minutes on 2 cores)
test: install
	$(BIN)/python -m pytest $(ARGS)

## make test-fast: everything not marked slow (still real, tiny training), about 110 s on 2 cores
test-fast: install
	$(BIN)/python -m pytest -m "not slow" $(ARGS)

## make test-upgrade: the fast tier in a separate virtualenv (.venv-upgrade) with the newest
## releases pyproject.toml allows, to see an upgrade coming before users do; not part of CI
UPGRADE_VENV ?= .venv-upgrade
test-upgrade:
	rm -rf $(UPGRADE_VENV)
	$(PYTHON) -m venv $(UPGRADE_VENV)
	$(UPGRADE_VENV)/bin/python -m pip install --disable-pip-version-check -q --upgrade pip
	$(UPGRADE_VENV)/bin/python -m pip install --disable-pip-version-check -q --upgrade \
		--upgrade-strategy eager -e ".[dev,sweep,jax,cluster]"
	$(UPGRADE_VENV)/bin/python -m pip list --format=freeze > $(UPGRADE_VENV)/versions.txt
	@echo "newest allowed releases: $(UPGRADE_VENV)/versions.txt"
	$(UPGRADE_VENV)/bin/python -m pytest -m "not slow" $(ARGS)

## make docs: the documentation site (docs/ -> site/), strict: a broken link fails
docs: install
	$(BIN)/mkdocs build --strict --site-dir site

lint: install
	$(BIN)/ruff check .

## make ui: the MLflow UI on the project's store, bound to 127.0.0.1 only; prints the link
## that opens the runs of experiment mnist in the model-training view
ui: install
	$(BIN)/python -m mnist_exp.runs ui --tracking-uri $(STORE) --port $(PORT)

## make server: an MLflow tracking server on PostgreSQL, bound to 127.0.0.1 (docs/team.md)
DB ?= postgresql+psycopg2://mlflow:mlflow@127.0.0.1:5432/mlflow
SERVER_ARTIFACTS ?= $(CURDIR)/outputs/server-artifacts
server: install
	$(BIN)/mlflow server --backend-store-uri $(DB) --artifacts-destination $(SERVER_ARTIFACTS) --host 127.0.0.1 --port $(PORT)

## make bench: mnist_exp (default, and train.backend=tensorflow) vs a plain Keras script and a
## pure-JAX yardstick, 10 epochs of full MNIST (~4 min)
bench: install
	$(BIN)/python -m bench

## make bench-sweep: an 8-job sweep, sequential vs joblib (writes bench/results/sweep.json)
bench-sweep: install
	$(BIN)/python -m bench.sweep

## make bench-sweep-cost: an 8-seed x 2-epoch sweep's wall time against its training time,
## and each job's start-up and overhead (writes bench/results/sweep_cost.json)
bench-sweep-cost: install
	$(BIN)/python -m bench.sweep_cost

## make bench-study: the project's Optuna study against a plain Optuna + Keras-on-JAX script
## of the same search and budget (writes bench/results/study.json)
bench-study: install
	$(BIN)/python -m bench.study $(ARGS)

## make bench-search ARGS="--trials 15 --epochs 4 --batch-size 128": TPE + median pruning vs
## TPE vs random search, same budget (writes bench/results/search.json)
bench-search: install
	$(BIN)/python -m bench.search $(ARGS)

## make bench-runs: how fast runs ls and load_runs answer on a store of 1,000 runs
## (writes bench/results/runs.json)
bench-runs: install
	$(BIN)/python -m bench.runs $(ARGS)

clean:
	rm -rf $(VENV) $(UPGRADE_VENV) build site *.egg-info .pytest_cache .ruff_cache
