# The two set-up commands of the README: `make run` and `make test`.
PYTHON ?= python3.11
VENV ?= .venv
BIN := $(VENV)/bin
# On the reference machine this file is the CPU build on local disk; elsewhere pip picks
# the platform's default build of the same version.
TORCH ?= torch==2.13.0

.PHONY: run test install install-dev lint services gpu-wheels

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip

install: $(BIN)/python
	$(BIN)/pip install -q "$(TORCH)"
	$(BIN)/pip install -q -e ".[worker]"

install-dev: $(BIN)/python
	$(BIN)/pip install -q "$(TORCH)"
	$(BIN)/pip install -q -e ".[dev]"

## Install and run the app on the embedded default (SQLite, in-process worker, toy world, CPU).
run: install
	$(BIN)/perfusion-studio serve

lint:
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/hadolint --failure-threshold warning Dockerfile
	POSTGRES_PASSWORD=x STUDIO_SECRET_KEY=x docker-compose -f docker-compose.yml config -q

services:
	bash scripts/ensure-services.sh

## Install everything and run lint plus the whole test suite against real services.
test: install-dev services lint
	REQUIRE_SERVICES=1 $(BIN)/python -m pytest

# The wheels bench/gpu_check.sh needs on a lent GPU, whose image has torch but no diffusers.
gpu-wheels: $(BIN)/python
	$(BIN)/python -m pip download -q --no-deps --only-binary=:all: -d .gpu-wheels \
		"diffusers==$$($(BIN)/python -c 'import diffusers; print(diffusers.__version__)')" \
		importlib_metadata zipp
