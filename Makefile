# The README's two commands: `make run` serves on port 5000, `make test` runs the whole suite.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
PORT   ?= 5000

.PHONY: run test lint install

$(BIN)/iweblens: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev,engines]'
	touch $@

install: $(BIN)/iweblens

run: install
	$(BIN)/iweblens serve --port $(PORT)

lint: install
	$(BIN)/ruff check src tests
	$(BIN)/ruff format --check src tests

test: install lint
	scripts/install-system-deps.sh
	$(BIN)/iweblens fetch-model
	$(BIN)/pytest
