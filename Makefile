# Two commands do all set-up on a fresh machine:
#   make demo   install mm and run its main job (offline search over the bundled sample corpus)
#   make test   install mm with test tools and run the test suite (CI runs exactly this)
# A virtualenv (.venv) is created unless one is already active.

PYTHON ?= python3
VENV ?= .venv
ifdef VIRTUAL_ENV
BIN := $(VIRTUAL_ENV)/bin
else
BIN := $(VENV)/bin
endif
PY := $(BIN)/python
PYTEST_ARGS ?=

.PHONY: install system-deps demo test test-fast lint bench

$(VENV)/bin/python:
	$(PYTHON) -m venv $(VENV)

# torch first, pinned to the local CPU wheel; the constraint keeps every later resolve on it
install: $(if $(VIRTUAL_ENV),,$(VENV)/bin/python)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q torch==2.13.0
	$(PY) -m pip install -q -c constraints.txt -e '.[all,dev]'
	$(PY) scripts/check_env.py

# Debian packages used by the browser and audio tests (skipped when already present or not root)
system-deps:
	@bash scripts/system_deps.sh

demo: install
	$(BIN)/mm demo

# pytest runs tests/ and every docstring example of the package (pyproject: testpaths + --doctest-modules)
test: install system-deps
	$(PY) -m pytest $(PYTEST_ARGS)

test-fast:
	$(PY) -m pytest -m "not slow and not browser and not long" $(PYTEST_ARGS)

lint:
	$(BIN)/ruff check .

bench:
	for f in benchmarks/*.py; do $(PY) $$f; done
