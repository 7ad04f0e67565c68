# Celeris developer entry points. Everything installs itself: a fresh machine needs only python3.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
PIP    := $(PY) -m pip
STAMP_BASE := $(VENV)/.installed-base
STAMP_DEV  := $(VENV)/.installed-dev
export NUMBA_CACHE_DIR ?= $(CURDIR)/.cache/numba

.PHONY: demo test lint typecheck unit bench clean venv

$(PY):
	$(PYTHON) -m venv $(VENV)
	$(PIP) install -q --upgrade pip

$(STAMP_BASE): pyproject.toml constraints.txt | $(PY)
	$(PIP) install -q -c constraints.txt -e .
	touch $@

$(STAMP_DEV): pyproject.toml constraints.txt | $(PY)
	$(PIP) install -q -c constraints.txt -e ".[dev]"
	touch $@ $(STAMP_BASE)

venv: $(STAMP_DEV)

## make demo: install Celeris and run the end-to-end showcase on real data (< 60 s warm)
demo: $(STAMP_BASE)
	$(VENV)/bin/celeris demo

lint: $(STAMP_DEV)
	$(VENV)/bin/ruff check src tests benchmarks
	$(VENV)/bin/ruff format --check src tests benchmarks

typecheck: $(STAMP_DEV)
	$(VENV)/bin/mypy src

unit: $(STAMP_DEV)
	$(PY) -m pytest -n 2 -q

## make test: install with dev extras, lint, type-check and run the whole suite
test: lint typecheck unit

bench: $(STAMP_DEV)
	$(PY) benchmarks/bench_sweep.py

clean:
	rm -rf $(VENV) .cache .pytest_cache .mypy_cache .ruff_cache
