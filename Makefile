# Tierone. `make run` serves the bundled pack on 127.0.0.1; `make test` passes the tests.
# Both set up .venv on a fresh machine first.

PYTHON ?= python3
HOST ?= 127.0.0.1
PORT ?= 8000
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp

.DEFAULT_GOAL := help
.PHONY: help install run chat test test-unit lint eval bench clean chromium postgres

help: ## Show the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-8s %s\n", $$1, $$2}'

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q -U pip
	# The CPU build of PyTorch first: a plain requirement would pull a CUDA build of several GB.
	$(BIN)/pip install -q torch==2.13.0
	$(BIN)/pip install -q -e '.[dev]'
	touch $(STAMP)

install: $(STAMP) ## Set up .venv with everything Tierone needs

run: $(STAMP) ## Index the bundled runbooks and serve the API and chat on $(HOST):$(PORT)
	$(BIN)/tierone index
	$(BIN)/tierone serve --host $(HOST) --port $(PORT)

chat: $(STAMP) ## Talk to the bot in this terminal
	$(BIN)/tierone chat

# The browser tests drive the Debian package (never `playwright install`, whose download fails offline).
chromium: ## Install /usr/bin/chromium for the browser tests, if it is missing
	@test -x /usr/bin/chromium || { \
	  if [ "$$(id -u)" = 0 ]; then apt-get update && apt-get install -y chromium; \
	  else echo "The browser tests need /usr/bin/chromium: run 'sudo apt-get install -y chromium'" >&2; exit 1; fi; }

# The PostgreSQL tests start their own server from the Debian package's binaries (tests/pg.py).
postgres: ## Install PostgreSQL's binaries for the PostgreSQL tests, if they are missing
	@ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || { \
	  if [ "$$(id -u)" = 0 ]; then apt-get update && apt-get install -y postgresql; \
	  else echo "The PostgreSQL tests need initdb: run 'sudo apt-get install -y postgresql'" >&2; exit 1; fi; }

test: $(STAMP) chromium postgres ## Run the test suite (browser and PostgreSQL tests included)
	$(BIN)/python -m pytest -q

test-unit: $(STAMP) ## The fast tests: no embedding model, no browser (seconds)
	$(BIN)/python -m pytest -q -m "not model and not browser"

lint: $(STAMP) ## ruff and mypy
	$(BIN)/ruff check .
	$(BIN)/mypy

eval: $(STAMP) ## Play the bundled eval cases (and the branching ones) and write data/eval-report*.json
	$(BIN)/tierone eval --runbooks runbooks --cases eval/cases/bundled.jsonl --report data/eval-report.json
	$(BIN)/tierone eval --runbooks runbooks --cases eval/cases/branches.jsonl --report data/eval-report-branches.json

bench: $(STAMP) ## Per-turn latency of the offline brain, in-process
	$(BIN)/python bench/turns.py

clean: ## Remove .venv and data/
	rm -rf $(VENV) data
