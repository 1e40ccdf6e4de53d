# Two commands do all the set-up on a fresh machine: `make run` and `make test`.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
# pytest-xdist workers of the test targets: one per core, at most 4 (the end-to-end tests
# each hold networks, DataModules and subprocesses). Each worker takes whole test modules
# (loadscope), so a module's shared fixtures are built once. TEST_WORKERS=0 runs serially.
TEST_WORKERS ?= auto --maxprocesses=4
XDIST = -n $(TEST_WORKERS) --dist loadscope

.DEFAULT_GOAL := help
.PHONY: help install run test test-all test-fast lint format bench clean

help: ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-10s %s\n", $$1, $$2}'

$(STAMP): pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --upgrade pip setuptools wheel
	$(PY) -m pip install -e '.[dev,cluster]'
	@touch $(STAMP)

install: $(STAMP) ## create .venv and install the project with its dev and cluster extras (quick when nothing changed)

run: install ## run the whole pipeline on the embedded BraTS-format demo data
	$(PY) -m src.run $(ARGS)

test: install ## run the test suite (what CI runs; skips the tests marked release)
	$(PY) -m pytest $(XDIST) $(ARGS)

test-all: install ## run every test, the long release tests too: run before each release
	$(PY) -m pytest $(XDIST) --release $(ARGS)

test-fast: install ## run the tests not marked slow
	$(PY) -m pytest $(XDIST) -m "not slow" $(ARGS)

lint: install ## ruff check and format check
	$(PY) -m ruff check src tests benchmarks experiments
	$(PY) -m ruff format --check src tests benchmarks experiments

format: install ## apply ruff fixes and formatting
	$(PY) -m ruff check --fix src tests benchmarks experiments
	$(PY) -m ruff format src tests benchmarks experiments

bench: install ## run the benchmarks and write benchmarks/results.md
	$(PY) -m benchmarks.run $(ARGS)

clean: ## remove caches and run outputs (keeps .venv)
	rm -rf outputs multirun .cache .pytest_cache .ruff_cache
