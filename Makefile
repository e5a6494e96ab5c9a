# visionzoo: every target creates .venv and installs what it needs first.
#   make serve   install the serving extra, then serve the shipped models (HTTP :3000, gRPC :8001)
#   make test    install everything, then run the test suite (what CI runs)
#   make lint    ruff check (visionzoo, tests, benchmarks)
#   make bench   engines, the service on every protocol, batching, overload, MLServer -> benchmarks/RESULTS.md
#   make soak    SOAK_MINUTES (30) of mixed load on all models and protocols: RSS growth, errors, temp files left
#   make fuzz    schemathesis against the served OpenAPI document, >= 10,000 cases (FUZZ_EXAMPLES per operation)

PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(VENV)/bin
PIP := $(BIN)/python -m pip
PYTEST_ARGS ?=
export BENTOML_DO_NOT_TRACK := True
export PATH := $(abspath $(BIN)):$(PATH)

.PHONY: install install-serving serve test lint test-slow fuzz soak bench reproduce ship build container container-test clean help container-gpu

help:
	@sed -n '1,7p' Makefile

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

# make test: the tests that start no server on TEST_WORKERS pytest-xdist processes (grouping: tests/conftest.py),
# then the end-to-end tests, which time real servers, one at a time. Either half may collect nothing
# (pytest's exit 5, e.g. when PYTEST_ARGS names one file), not both; any other failure fails the target.
TEST_WORKERS ?= 2
test: install
	@failed=0; empty=0; \
	$(BIN)/python -m pytest -m "not slow and not container and not e2e" -n $(TEST_WORKERS) --dist loadgroup $(PYTEST_ARGS); \
	rc=$$?; [ $$rc = 5 ] && empty=$$((empty + 1)) || [ $$rc = 0 ] || failed=1; \
	$(BIN)/python -m pytest -m "e2e and not slow and not container" $(PYTEST_ARGS); \
	rc=$$?; [ $$rc = 5 ] && empty=$$((empty + 1)) || [ $$rc = 0 ] || failed=1; \
	[ $$empty -lt 2 ] || { echo "make test: no test matched PYTEST_ARGS=$(PYTEST_ARGS)"; failed=1; }; \
	exit $$failed

lint: install
	$(BIN)/ruff check visionzoo tests benchmarks

test-slow: install
	$(BIN)/python -m pytest -m "slow" -n $(TEST_WORKERS) --dist loadgroup $(PYTEST_ARGS)

FUZZ_EXAMPLES ?= 2000
fuzz: install
	VISIONZOO_FUZZ_EXAMPLES=$(FUZZ_EXAMPLES) $(BIN)/python -m pytest -m fuzz tests/e2e/test_fuzz.py -p no:cacheprovider $(PYTEST_ARGS)

SOAK_MINUTES ?= 30
SOAK_RATE ?= 20
soak: install
	$(BIN)/python -m benchmarks.soak --minutes $(SOAK_MINUTES) --rate $(SOAK_RATE)

bench: install
	$(BIN)/python -m benchmarks.run

reproduce: install
	$(BIN)/visionzoo reproduce --data-dir $${VISIONZOO_DATA:-../shared/data}

ship: install
	$(BIN)/python -m visionzoo.training.ship --data-dir $${VISIONZOO_DATA:-../shared/data}

clean:
	rm -rf $(VENV) build dist *.egg-info .pytest_cache

# Containers (deploy/, README "Deploy"). `make container` / `make container-gpu` build the images
# users run (python:3.11-slim base, the exports in exported_models/); `make container-test` builds
# a test image on a local Debian base (Docker Hub is out of reach in CI) with the shipped models, or
# the toy models while exports are missing, runs it and tests it end to end, then removes it.
CONTAINER_TEST_IMAGE ?= visionzoo:test
CONTAINER_TEST_BASE ?= localhost/visionzoo-base:bookworm-py3.11

container: install
	deploy/build_image.sh

container-gpu: install
	deploy/build_image.sh --gpu

container-test: install
	deploy/install_podman.sh
	case "$(CONTAINER_TEST_BASE)" in localhost/visionzoo-base:*) deploy/base_image.sh $(CONTAINER_TEST_BASE);; esac
	models=$$($(BIN)/python -c 'from tests.serving.toy_models import models_root; print(models_root())') && \
	  BASE_IMAGE=$(CONTAINER_TEST_BASE) IMAGE=$(firstword $(subst :, ,$(CONTAINER_TEST_IMAGE))) \
	  TAG=$(lastword $(subst :, ,$(CONTAINER_TEST_IMAGE))) deploy/build_image.sh --models "$$models"
	VISIONZOO_IMAGE=$(CONTAINER_TEST_IMAGE) VISIONZOO_CONTAINER_REQUIRED=1 VISIONZOO_CONTAINER_NAME=visionzoo-container-test \
	  $(BIN)/python -m pytest -m container tests/container $(PYTEST_ARGS); \
	  status=$$?; podman rm -f visionzoo-container-test >/dev/null 2>&1; exit $$status
