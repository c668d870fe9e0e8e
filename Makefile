# Two commands on a fresh machine: `make up` runs the whole system, `make test` runs every test.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
NODE_STAMP := tests/node/node_modules/.installed
WEB_STAMP  := web/node_modules/.installed
SCHEMA_STAMP := deploy/compose-schema/node_modules/.installed
ARGS   ?=

.PHONY: setup system-deps up test lint unit conformance-suite clean bench chaos jitter vendor-client

$(STAMP): pyproject.toml
	@command -v $(PYTHON) >/dev/null || { echo "need $(PYTHON)"; exit 1; }
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[test]'
	touch $@

$(NODE_STAMP): tests/node/package.json tests/node/package-lock.json
	./scripts/ensure-system-deps node
	npm ci --prefix tests/node --no-audit --no-fund --loglevel=error
	touch $@

# The npm package of the socket.io-client browser bundle vendored in web/vendor/ (the tests
# check the vendored copy against it; `make vendor-client` refreshes it after a version bump).
$(WEB_STAMP): web/package.json web/package-lock.json
	./scripts/ensure-system-deps node
	npm ci --prefix web --no-audit --no-fund --loglevel=error
	touch $@

# The Compose Specification's JSON schema (tests/unit/test_compose_file.py checks
# docker-compose.yml against it).
$(SCHEMA_STAMP): deploy/compose-schema/package.json deploy/compose-schema/package-lock.json
	./scripts/ensure-system-deps node
	npm ci --prefix deploy/compose-schema --no-audit --no-fund --loglevel=error
	touch $@

# Node.js/npm, Debian's chromium (browser tests), HAProxy and PostgreSQL; installs only what
# is missing.
system-deps:
	./scripts/ensure-system-deps

setup: system-deps $(STAMP) $(NODE_STAMP) $(WEB_STAMP) $(SCHEMA_STAMP)

up: $(STAMP)
	$(BIN)/switchboard up $(ARGS)

vendor-client: $(WEB_STAMP)
	cp web/node_modules/socket.io-client/dist/socket.io.min.js \
	   web/node_modules/socket.io-client/dist/socket.io.min.js.map \
	   web/node_modules/socket.io-client/LICENSE web/vendor/socket.io-client/
	node -p 'require("./web/node_modules/socket.io-client/package.json").version' \
	   > web/vendor/socket.io-client/VERSION

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/python scripts/typecheck

test: setup lint
	$(BIN)/pytest $(ARGS)

unit: $(STAMP)
	$(BIN)/pytest tests/unit $(ARGS)

# Side-by-side benchmark vs Node socket.io and python-socketio (bench/README.md).
bench: $(STAMP)
	$(BIN)/python -m bench $(ARGS)

# kill -9 and freezes of every part under steady acked traffic; a table of what was lost
# (README "Crashes"). ARGS="--quick" for the short run CI does.
chaos: $(STAMP)
	./scripts/ensure-system-deps haproxy
	$(BIN)/python -m bench.chaos $(ARGS)

# Connections cut every ~15 s: ours with recovery (and gateways killed) against Node.
jitter: $(STAMP)
	./scripts/ensure-system-deps haproxy
	$(BIN)/python -m bench.jitter $(ARGS)

clean:
	rm -rf $(VENV) tests/node/node_modules web/node_modules deploy/compose-schema/node_modules bench/loadgen/node_modules bench/peers/node/node_modules var test-output
