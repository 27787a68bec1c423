# The two commands of the README: `make run` and `make test`.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
DEV_STAMP := $(VENV)/.installed-dev
PYTEST_WORKERS ?= 2

export ILLBRIDGE_SANDBOX ?= true

.PHONY: run test lint typecheck pytest openapi bench clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

$(STAMP): pyproject.toml | $(BIN)/python
	$(BIN)/pip install --quiet -e .
	touch $@

$(DEV_STAMP): pyproject.toml | $(BIN)/python
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $@ $(STAMP)

## make run: install, migrate an SQLite database under var/, serve API + worker in sandbox mode
run: $(STAMP)
	$(BIN)/illbridge migrate
	$(BIN)/illbridge sandbox-seed
	$(BIN)/illbridge serve --host 127.0.0.1 --port 8000

## make test: lint, type check and the whole test suite
test: lint typecheck pytest

lint: $(DEV_STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

typecheck: $(DEV_STAMP)
	$(BIN)/mypy app

pytest: $(DEV_STAMP)
	ILLBRIDGE_SANDBOX=false $(BIN)/pytest -n $(PYTEST_WORKERS) --dist loadgroup -q

openapi: $(STAMP)
	ILLBRIDGE_SANDBOX=false $(BIN)/illbridge openapi --output openapi.yaml

bench: $(DEV_STAMP)
	ILLBRIDGE_SANDBOX=false $(BIN)/python -m bench.export

clean:
	rm -rf $(VENV) var .pytest_cache .mypy_cache .ruff_cache
