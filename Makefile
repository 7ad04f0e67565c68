# Celeris developer entry points. Everything installs itself: a fresh machine needs only python3.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
PIP    := $(PY) -m pip
STAMP_BASE := $(VENV)/.installed-base
STAMP_DEV  := $(VENV)/.installed-dev
export NUMBA_CACHE_DIR ?= $(CURDIR)/.cache/numba

.PHONY: demo test test-llm lint typecheck unit bench clean venv system-deps

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

# Real servers the tests start themselves (Debian packages): redis-server for the serving
# caches, PostgreSQL (initdb + postgres, a throw-away cluster per test session) for the registry;
# curl, which the documentation's shell examples use (tests/test_docs.py runs them); a C and a
# C++ compiler for the signal feed's example consumers; Prometheus (promtool, and the server the
# alert tests start) and Alertmanager (amtool) for deploy/'s monitoring files. A missing one
# fails the tests, never skips.
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
system-deps:
	@{ command -v redis-server && command -v curl && command -v cc && command -v c++ \
		&& command -v prometheus && command -v promtool && command -v amtool \
		&& ls /usr/lib/postgresql/*/bin/initdb; } >/dev/null 2>&1 || { \
		$(SUDO) apt-get update -qq && DEBIAN_FRONTEND=noninteractive \
		$(SUDO) apt-get install -y -qq redis-server postgresql curl gcc g++ \
		prometheus prometheus-alertmanager >/dev/null; }

STAMP_LLAMA := $(VENV)/.installed-llamacpp
# llama-cpp-python is source-only on PyPI: the first install compiles llama.cpp (~10 min on
# 2 cores); pip caches the wheel, so later installs take seconds.
$(STAMP_LLAMA): $(STAMP_DEV)
	$(PIP) install -q -c constraints.txt -e ".[dev,llm-llamacpp]"
	touch $@

## make test-llm: the LLM analyst tests against llama.cpp's server with SmolLM2-135M (real model)
test-llm: $(STAMP_LLAMA)
	CELERIS_TEST_LLM_BACKEND=llamacpp $(PY) -m pytest -q -p no:xdist tests/llm tests/cli/test_analyze_cmd.py

## make demo: install Celeris and run the end-to-end showcase on real data (< 60 s warm)
demo: $(STAMP_BASE)
	$(VENV)/bin/celeris demo

lint: $(STAMP_DEV)
	$(VENV)/bin/ruff check src tests benchmarks
	$(VENV)/bin/ruff format --check src tests benchmarks

typecheck: $(STAMP_DEV)
	$(VENV)/bin/mypy src

# --dist worksteal: each worker starts on one contiguous half of the suite (so a module's tests,
# and its module-scoped fixtures, mostly stay on one worker) and steals the other's queue tail
# when it runs dry, so both finish together. (--dist loadgroup would be the explicit way, but
# pytest-xdist 3.8 sets the group on item._nodeid, which pytest 9 no longer reads: it groups
# nothing.)
unit: $(STAMP_DEV) system-deps
	$(PY) -m pytest -n 2 -q --dist worksteal

# On a clean clone numba's cache is empty and each test worker would compile every kernel itself
# (~300 s of CPU, most of it twice). tests/warm_numba_cache.py fills the cache in two background
# processes while ruff and mypy (one core) run; a failed warm-up only prints its log.
WARM := $(PY) tests/warm_numba_cache.py

## make test: install with dev extras, lint, type-check and run the whole suite
test: $(STAMP_DEV)
	@mkdir -p .cache; \
	$(WARM) backtest data vectorbt >.cache/warm-a.log 2>&1 & a=$$!; \
	$(WARM) indicators >.cache/warm-b.log 2>&1 & b=$$!; \
	$(MAKE) --no-print-directory lint typecheck || { kill $$a $$b 2>/dev/null; exit 1; }; \
	wait $$a $$b; cat .cache/warm-a.log .cache/warm-b.log
	$(MAKE) --no-print-directory unit

bench: $(STAMP_DEV)
	$(PY) benchmarks/bench_sweep.py

clean:
	rm -rf $(VENV) .cache .pytest_cache .mypy_cache .ruff_cache
