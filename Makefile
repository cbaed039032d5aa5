# `make demo` and `make test` each build .venv on a fresh machine; nothing else is needed.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
PIP    := $(BIN)/pip install --quiet --disable-pip-version-check -c constraints.txt

.PHONY: demo test lint bench clean chromium

# One stamp per set of extras, remade when the project's requirements change.
$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --disable-pip-version-check --upgrade pip

$(VENV)/.demo-stamp: $(BIN)/python pyproject.toml constraints.txt
	$(PIP) torch==2.13.0
	$(PIP) -e '.[plot,cli,labs]'
	touch $@

$(VENV)/.test-stamp: $(BIN)/python pyproject.toml constraints.txt
	$(PIP) torch==2.13.0
	$(PIP) -e '.[plot,cli,labs,integrations,dev]'
	touch $@

demo: $(VENV)/.demo-stamp
	$(BIN)/gradwatch labs --quick

# The report test opens pages in Debian's headless Chromium; install it when missing.
chromium:
	@command -v chromium >/dev/null 2>&1 || { \
	  echo "installing Debian's chromium for the report's browser test"; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null; }

lint: $(VENV)/.test-stamp
	$(BIN)/ruff check src tests benchmarks
	$(BIN)/mypy

test: lint chromium
	$(BIN)/python -m pytest -q

# Peers for benchmarks/peers.py and core_speed.py. Cockpit's BackPACK would pull a CUDA
# torchvision that breaks `import lightning.pytorch` next to the CPU torch: no-deps for those.
$(VENV)/.bench-stamp: $(VENV)/.test-stamp
	$(PIP) gradviz traintools lyapynov einops json-tricks seaborn pandas
	$(PIP) --no-deps cockpit-for-pytorch backpack-for-pytorch unfoldNd
	touch $@

bench: $(VENV)/.bench-stamp
	$(BIN)/python benchmarks/core_speed.py
	$(BIN)/python benchmarks/watch_overhead.py
	$(BIN)/python benchmarks/peers.py
	$(BIN)/python benchmarks/scaling.py
	$(BIN)/python benchmarks/long_run.py

clean:
	rm -rf $(VENV) build src/*.egg-info .pytest_cache .mypy_cache .ruff_cache
