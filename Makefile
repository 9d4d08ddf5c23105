# The two commands: `make run` (set up and run the main job end to end) and `make test`.
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
QRW := $(VENV)/bin/qrw
SAMPLES ?= build/samples

.PHONY: setup run test lint train bench bench-quick bench-setup bench-speed bench-queue bench-hostile bench-soak bench-backfill check-rq-tools clean

setup: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	@$(PYTHON) -m venv --help >/dev/null 2>&1 || { \
	  echo "python3-venv is missing; installing it (Debian)"; apt-get update -qq && apt-get install -y -qq python3-venv; }
	@command -v redis-server >/dev/null || { \
	  echo "redis-server is missing; installing it (Debian)"; apt-get update -qq && apt-get install -y -qq redis-server; }
	@command -v cargo >/dev/null || { \
	  echo "cargo is missing; installing it (Debian): the Rust producer example is built by the tests"; \
	  apt-get update -qq && apt-get install -y -qq cargo; }
	@command -v openssl >/dev/null || { \
	  echo "openssl is missing; installing it (Debian): the Redis TLS tests make their certificates with it"; \
	  apt-get update -qq && apt-get install -y -qq openssl; }
	@command -v promtool >/dev/null || { \
	  echo "prometheus is missing; installing it (Debian): the tests check the alert rules and dashboard queries"; \
	  apt-get update -qq && apt-get install -y -qq prometheus; }
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[test]'
	@touch $@

run: setup
	$(QRW) demo --samples $(SAMPLES) --count 12 --workers 2

# Two processes: the suite mostly waits on real processes (Redis, pools, leases, restarts),
# so on 2 cores it takes about 7 minutes instead of 12 (measured 2026-12-06, 1,130 tests).
test: setup
	$(PY) -m pytest -q -n 2

lint: setup
	$(VENV)/bin/ruff check . && $(VENV)/bin/ruff format --check .

# Reproduces models/qr-det-{small,medium}.{onnx,pt} and their metrics: the exact recipe of
# the shipped weights (two cycles for small, three for medium, each continuing from the
# previous cycle's last weights with a new data seed). CPU, 2 cores: about 2.8 hours when run one after
# the other. See models/README.md.
train: setup
	$(PY) -m pip install --quiet -e '.[test,train]'
	$(PY) -m models.detector cache
	$(PY) -m models.detector train --model small --seed 0 --minutes 30
	$(PY) -m models.detector train --model small --seed 1 --minutes 23 --lr 2e-3 \
	  --init build/detector-train/small/last.pt --tag cycle2
	$(PY) -m models.detector export --model small --checkpoint build/detector-train/small-cycle2/last.pt
	$(PY) -m models.detector train --model medium --seed 0 --minutes 42
	$(PY) -m models.detector train --model medium --seed 1 --minutes 15 --lr 2e-3 \
	  --init build/detector-train/medium/last.pt --tag cycle2
	$(PY) -m models.detector train --model medium --seed 2 --minutes 18 --lr 1.5e-3 \
	  --init build/detector-train/medium-cycle2/last.pt --tag cycle3

bench-setup: setup
	@ldconfig -p | grep -q libzbar || { apt-get update -qq && apt-get install -y -qq libzbar0; }
	$(PY) -m pip install --quiet -e '.[test,bench]'

bench: bench-setup
	$(QRW) bench --out docs/benchmarks.md
	$(PY) -m worker.bench.runtimes --out docs/benchmarks.md

bench-quick: bench-setup
	$(QRW) bench --quick

bench-speed: setup
	$(PY) -m worker.bench.speed --out docs/benchmarks.md

bench-queue: setup
	$(PY) -m worker.bench.queue --out docs/benchmarks.md

# Issue 9's measurement: hostile files and jobs against a real worker pool and shim
# (outcome, seconds, peak memory per input, and the promises as PASS/FAIL). About a minute.
bench-hostile: setup
	$(PY) -m worker.bench.hostile --out docs/reliability.md

# Issue 18's soak: 15 minutes at 80% of the pool's measured capacity through a fault every
# minute (deploy, worker SIGKILL, Redis SIGKILL, Redis full for 30 s), then the accounting;
# then 20 idle and 20 busy pools stopped and timed. About 22 minutes; exits 1 on a lost or
# duplicated job or a slow stop.
bench-soak: setup
	$(PY) -m worker.bench.soak --minutes 15 --stops 20 --out docs/reliability.md

# Issue 10's measurement: backfill throughput against plain queue jobs, listing and enqueue
# over 100,000 objects in moto's S3, resume after SIGKILL, live-job latency under a backfill.
bench-backfill: setup
	$(PY) -m worker.bench.backfill --out docs/benchmarks.md

# RQ's own tools against a real pool (issue 17): rq-dashboard and rq-exporter list our queues,
# workers, finished and failed jobs without a server error. They pin rq<3 (we run RQ 3), so they
# get a venv of their own; rq-dashboard 0.9.0 imports six without declaring it. Not part of
# `make test` (docs/operations.md, *RQ's own tools*).
RQ_TOOLS_VENV ?= build/rq-tools-venv

check-rq-tools: setup $(RQ_TOOLS_VENV)/.installed
	QRW_RQ_TOOLS_VENV=$(RQ_TOOLS_VENV) $(PY) -m pytest -q -p no:cacheprovider tests/test_rq_tools.py

$(RQ_TOOLS_VENV)/.installed:
	$(PYTHON) -m venv $(RQ_TOOLS_VENV)
	$(RQ_TOOLS_VENV)/bin/pip install --quiet 'rq-dashboard==0.9.*' 'rq-exporter==3.1.*' six
	@touch $@

clean:
	rm -rf $(VENV) build .pytest_cache
