# visionzoo: every target creates .venv and installs what it needs first.
#   make serve   install the serving extra, then serve the shipped models (HTTP :3000, gRPC :8001)
#   make test    install everything, then run the test suite (what CI runs)
#   make bench   serving and training benchmarks -> benchmarks/RESULTS.md

PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(VENV)/bin
PIP := $(BIN)/python -m pip
PYTEST_ARGS ?=
export BENTOML_DO_NOT_TRACK := True
export PATH := $(abspath $(BIN)):$(PATH)

.PHONY: install install-serving serve test test-slow bench reproduce ship build container container-test clean help

help:
	@sed -n '1,6p' Makefile

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(PIP) install -q --upgrade pip

$(VENV)/.installed-dev: pyproject.toml | $(BIN)/python
	$(PIP) install -q -e ".[dev]"
	touch $@

$(VENV)/.installed-serving: pyproject.toml | $(BIN)/python
	$(PIP) install -q -e ".[serving]"
	touch $@

install: $(VENV)/.installed-dev
install-serving: $(VENV)/.installed-serving

serve: install-serving
	$(BIN)/bentoml serve .

test: install
	$(BIN)/python -m pytest -m "not slow and not container" $(PYTEST_ARGS)

test-slow: install
	$(BIN)/python -m pytest -m "slow" $(PYTEST_ARGS)

bench: install
	$(BIN)/python -m benchmarks.run

reproduce: install
	$(BIN)/visionzoo reproduce --data-dir $${VISIONZOO_DATA:-../shared/data}

ship: install
	$(BIN)/python -m training.ship --data-dir $${VISIONZOO_DATA:-../shared/data}

clean:
	rm -rf $(VENV) build dist *.egg-info .pytest_cache
