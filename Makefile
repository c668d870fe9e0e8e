# Two commands on a fresh machine: `make up` runs the whole system, `make test` runs every test.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
NODE_STAMP := tests/node/node_modules/.installed
ARGS   ?=

.PHONY: setup up test lint unit conformance-suite clean

$(STAMP): pyproject.toml
	@command -v $(PYTHON) >/dev/null || { echo "need $(PYTHON)"; exit 1; }
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[test]'
	touch $@

$(NODE_STAMP): tests/node/package.json tests/node/package-lock.json
	./scripts/ensure-system-deps
	npm ci --prefix tests/node --no-audit --no-fund --loglevel=error
	touch $@

setup: $(STAMP) $(NODE_STAMP)

up: $(STAMP)
	$(BIN)/switchboard up $(ARGS)

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/mypy

test: setup lint
	$(BIN)/pytest $(ARGS)

unit: $(STAMP)
	$(BIN)/pytest tests/unit $(ARGS)

clean:
	rm -rf $(VENV) tests/node/node_modules var test-output
