PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: help install demo test test-reliability lint typecheck pytest chromium bench bench-quick clean

help:
	@echo "make demo   polling vs push, measured: a simulated upstream through the bridge (all local)"
	@echo "make test   install everything into .venv, then ruff, mypy and pytest"
	@echo "make test-reliability   only the crash, fault and bad-input suite"
	@echo "make bench  run the benchmarks"

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[test]'
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(BIN)/bridge demo

lint: $(STAMP)
	$(BIN)/ruff check bridge tests
	$(BIN)/ruff format --check bridge tests

typecheck: $(STAMP)
	$(BIN)/mypy

pytest: $(STAMP)
	$(BIN)/pytest $(PYTEST_ARGS)

# The status page's browser test needs Debian's chromium: install it when it is missing and we
# are root; never fail the build over it (the test then skips and says why).
chromium:
	@if [ ! -x /usr/bin/chromium ] && [ "$$(id -u)" = 0 ]; then \
		echo "installing chromium for the status page's browser test"; \
		(apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y chromium) >/dev/null 2>&1 \
			|| echo "could not install chromium: the browser test will skip"; \
	fi; true

test: lint typecheck chromium pytest

# The crash, fault and bad-input suite alone (make test runs it too).
test-reliability: $(STAMP)
	$(BIN)/pytest -m reliability $(PYTEST_ARGS)

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache .mypy_cache .ruff_cache
