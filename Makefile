# `make demo` and `make test` each build .venv on a fresh machine; nothing else is needed.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
PIP    := $(BIN)/pip install --quiet --disable-pip-version-check -c constraints.txt

.PHONY: demo test lint bench clean

# One stamp per set of extras, remade when the project's requirements change.
$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --disable-pip-version-check --upgrade pip

$(VENV)/.demo-stamp: $(BIN)/python pyproject.toml constraints.txt
	$(PIP) torch==2.13.0
	$(PIP) -e '.[plot,cli]'
	touch $@

$(VENV)/.test-stamp: $(BIN)/python pyproject.toml constraints.txt
	$(PIP) torch==2.13.0
	$(PIP) -e '.[plot,cli,dev]'
	touch $@

demo: $(VENV)/.demo-stamp
	$(BIN)/gradwatch demo

lint: $(VENV)/.test-stamp
	$(BIN)/ruff check src tests benchmarks
	$(BIN)/mypy

test: lint
	$(BIN)/python -m pytest -q

bench: $(VENV)/.test-stamp
	$(BIN)/python benchmarks/core_speed.py

clean:
	rm -rf $(VENV) build src/*.egg-info .pytest_cache .mypy_cache .ruff_cache
