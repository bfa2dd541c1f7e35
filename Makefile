PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
BENCH_STAMP := $(VENV)/.bench-installed

.PHONY: help install demo test test-reliability lint typecheck pytest chromium bench bench-quick clean

help:
	@echo "make demo   polling vs push, measured: a simulated upstream through the bridge (all local)"
	@echo "make test   install everything into .venv, then ruff, mypy and pytest"
	@echo "make test-reliability   only the crash, fault and bad-input suite"
	@echo "make bench  run the benchmarks (make bench-quick: under 2 minutes)"

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[test,plot,postgres,tracing]'
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(BIN)/bridge demo

lint: $(STAMP)
	$(BIN)/ruff check bridge tests bench
	$(BIN)/ruff format --check bridge tests bench

typecheck: $(STAMP)
	$(BIN)/mypy

pytest: $(STAMP)
	$(BIN)/pytest $(PYTEST_ARGS)

# The browser tests (the status page, the admin pages) need Debian's chromium and
# chromium-driver: install them when missing and we are root; never fail the build over it
# (the tests then skip and say which tool is absent).
chromium:
	@if { [ ! -x /usr/bin/chromium ] || [ ! -x /usr/bin/chromedriver ]; } && [ "$$(id -u)" = 0 ]; then \
		echo "installing chromium and chromium-driver for the browser tests"; \
		(apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y chromium chromium-driver) >/dev/null 2>&1 \
			|| echo "could not install chromium and chromium-driver: the browser tests will skip"; \
	fi; true

test: lint typecheck chromium pytest

# The crash, fault and bad-input suite alone (make test runs it too).
test-reliability: $(STAMP)
	$(BIN)/pytest -m reliability $(PYTEST_ARGS)

# wrk (Debian's package) is optional: without it the aiohttp generator does the closed loop.
# Debian's webhook (adnanh/webhook) is the peer of the `ingest vs peer` figure, optional too.
$(BENCH_STAMP): $(STAMP)
	$(BIN)/pip install --quiet -e '.[test,plot,postgres,tracing,bench]'
	@command -v wrk >/dev/null || { [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null \
		&& (apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y wrk) >/dev/null 2>&1; } \
		|| echo "wrk not installed: the aiohttp generator will do the closed loop"
	@command -v webhook >/dev/null || { [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null \
		&& (apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y webhook) >/dev/null 2>&1; } \
		|| echo "webhook not installed: the figure against the peer will say not available"
	touch $(BENCH_STAMP)

bench: $(BENCH_STAMP)
	$(BIN)/python -m bench $(BENCH_ARGS)

bench-quick: $(BENCH_STAMP)
	$(BIN)/python -m bench --quick $(BENCH_ARGS)

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache .mypy_cache .ruff_cache
