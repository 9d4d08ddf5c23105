# The two commands: `make run` (set up and run the main job end to end) and `make test`.
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
QRW := $(VENV)/bin/qrw
SAMPLES ?= build/samples

.PHONY: setup run test lint bench-speed samples clean

setup: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	@$(PYTHON) -m venv --help >/dev/null 2>&1 || { \
	  echo "python3-venv is missing; installing it (Debian)"; apt-get update -qq && apt-get install -y -qq python3-venv; }
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[test]'
	@touch $@

samples: setup
	$(PY) -m models.synth $(SAMPLES) --seed 1 --count 12 --kind mixed

run: samples
	$(QRW) scan $(SAMPLES)

test: setup
	$(PY) -m pytest -q

lint: setup
	$(VENV)/bin/ruff check . && $(VENV)/bin/ruff format --check .

bench-speed: setup
	$(PY) -m worker.bench.speed --out docs/benchmarks.md

clean:
	rm -rf $(VENV) build .pytest_cache
