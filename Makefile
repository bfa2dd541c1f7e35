PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
BENCH_STAMP := $(VENV)/.bench-installed

.PHONY: help install demo test test-reliability lint typecheck pytest docs docs-strict chromium tools bench bench-quick clean

help:
	@echo "make demo   polling vs push, measured: a simulated upstream through the bridge (all local)"
	@echo "make test   install everything into .venv, then ruff, mypy, the docs (mkdocs --strict) and pytest"
	@echo "make test-reliability   only the crash, fault and bad-input suite"
	@echo "make bench  run the benchmarks (make bench-quick: under 2 minutes)"
	@echo "make docs   write the reference pages from the code, build the documentation into site/"

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[test,plot,postgres,tracing,docs,brokers]'
	touch $(STAMP)

install: $(STAMP)
	@echo "bridge and bridgectl are in $(CURDIR)/$(BIN); to run them from any folder:"
	@echo '  export PATH="$(CURDIR)/$(BIN):$$PATH"'

demo: $(STAMP)
	$(BIN)/bridge demo

lint: $(STAMP)
	$(BIN)/ruff check bridge tests bench docs/gen_reference.py docs/hooks.py
	$(BIN)/ruff format --check bridge tests bench docs/gen_reference.py docs/hooks.py

typecheck: $(STAMP)
	$(BIN)/mypy

# The crash, fault and bad-input suite (3 minutes) has a target of its own, which .ci/run
# runs after this one: make test stays the quick gate.
# The tests run on PYTEST_WORKERS processes (pytest-xdist), more than this 2-core machine's
# cores: most of a test's time is spent waiting on a daemon process or a socket. Every test
# keeps to its own ports, folders, PostgreSQL schema and broker names, so any order is fine;
# `--dist worksteal` hands the long tests' neighbours to idle workers. PYTEST_WORKERS=0 runs
# them in this one process (for a debugger, or -x).
PYTEST_WORKERS ?= 4
pytest: $(STAMP)
	$(BIN)/pytest -m "not reliability" -n $(PYTEST_WORKERS) --dist worksteal $(PYTEST_ARGS)

# The documentation site (docs/, mkdocs.yml). `make docs` writes docs/reference/ from the code
# first; `make test` builds what is committed, strictly: a broken link or anchor fails it (and
# tests/test_docs.py fails when the committed reference differs from the code's).
docs: $(STAMP)
	$(BIN)/python docs/gen_reference.py
	$(BIN)/mkdocs build --strict

# Never with --quiet: mkdocs then stops counting warnings, and --strict lets every one through.
docs-strict: $(STAMP)
	$(BIN)/mkdocs build --strict

# The browser tests (the status page, the admin pages) need Debian's chromium and
# chromium-driver: install them when missing and we are root; never fail the build over it
# (the tests then skip and say which tool is absent).
chromium:
	@if { [ ! -x /usr/bin/chromium ] || [ ! -x /usr/bin/chromedriver ]; } && [ "$$(id -u)" = 0 ]; then \
		echo "installing chromium and chromium-driver for the browser tests"; \
		(apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y chromium chromium-driver) >/dev/null 2>&1 \
			|| echo "could not install chromium and chromium-driver: the browser tests will skip"; \
	fi; true

# Real servers nobody here wrote, polled by tests/poll/test_third_party.py: localstripe and
# Datasette in a virtualenv of their own (their pins must not move ours), json-server 0.17
# and 1.0 from npm, and oauth2-mock-server (8.2.3: the last that runs on Node 20) for the
# OAuth2 tests. A tool that cannot be installed is skipped by name, never the build.
TOOLS := .tools
TOOLS_STAMP := $(TOOLS)/.installed
$(TOOLS_STAMP):
	@mkdir -p $(TOOLS)
	@{ $(PYTHON) -m venv $(TOOLS)/venv && $(TOOLS)/venv/bin/pip install --quiet \
		'localstripe==1.15.10' 'datasette==0.65.5'; } >/dev/null 2>&1 \
		|| echo "could not install localstripe and datasette: their tests will skip"
	@{ $(PYTHON) -m venv $(TOOLS)/graphql && $(TOOLS)/graphql/bin/pip install --quiet \
		'strawberry-graphql==0.287.0' 'graphql-core>=3.2,<3.3' 'uvicorn>=0.29' \
		'starlette>=0.37'; } >/dev/null 2>&1 \
		|| echo "could not install strawberry-graphql: its tests will skip"
	@command -v npm >/dev/null && (cd $(TOOLS) && npm install --silent --no-audit --no-fund \
		--prefix node 'json-server-017@npm:json-server@0.17.4' \
		'json-server-1@npm:json-server@1.0.0-beta.15') >/dev/null 2>&1 \
		|| echo "could not install json-server: its tests will skip"
	@command -v npm >/dev/null && (cd $(TOOLS) && npm install --silent --no-audit --no-fund \
		--prefix node 'oauth2-mock-server@8.2.3') >/dev/null 2>&1 \
		|| echo "could not install oauth2-mock-server: its tests will skip"
	@touch $(TOOLS_STAMP)

tools: $(TOOLS_STAMP)

test: lint typecheck docs-strict chromium tools pytest

# The crash, fault and bad-input suite on the real daemon (CI runs it after make test).
test-reliability: $(STAMP)
	$(BIN)/pytest -m reliability $(PYTEST_ARGS)

# wrk (Debian's package) is optional: without it the aiohttp generator does the closed loop.
# Debian's webhook (adnanh/webhook) is the peer of the `ingest vs peer` figure, optional too.
$(BENCH_STAMP): $(STAMP)
	$(BIN)/pip install --quiet -e '.[test,plot,postgres,tracing,docs,bench]'
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
	rm -rf $(VENV) $(TOOLS) build site *.egg-info .pytest_cache .mypy_cache .ruff_cache
