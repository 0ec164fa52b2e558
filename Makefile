# ContactPoint Gateway — the README's commands. `make help` lists them.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
CLI := $(BIN)/contactpoint-gateway
STAMP := $(VENV)/.installed-$(shell sha1sum pyproject.toml | cut -c1-12)
# The npm packages of the real-client tests (tests/clients), exactly as package-lock.json pins them.
CLIENTS := tests/clients/node_modules/.installed
PYTEST_ARGS ?=
# Test processes (pytest-xdist): "auto" is one per core; 0 runs in this process alone.
PYTEST_WORKERS ?= auto

.DEFAULT_GOAL := help
.PHONY: help install run test lint bench golden clean

help: ## list the commands
	@grep -hE '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | sort | awk -F':.*## ' '{printf "  make %-8s %s\n", $$1, $$2}'

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -e '.[dev]'
	rm -f $(VENV)/.installed-* && touch $@

install: $(STAMP) ## create .venv and install the project with its dev tools

run: $(STAMP) ## migrate, load demo data into an empty database, serve on 127.0.0.1:$GATEWAY_PORT
	$(CLI) db upgrade
	$(CLI) demo-data --if-empty --children $${GATEWAY_DEMO_CHILDREN:-2000} \
		--authorities $${GATEWAY_DEMO_AUTHORITIES:-4} --seed $${GATEWAY_DEMO_SEED:-2026}
	$(CLI) clients ensure-demo
	@echo
	@echo "Call the API from this folder, in a shell with the same GATEWAY_* variables as this one:"
	@echo '  curl -H "Authorization: Bearer $$($(CLI) token --client demo-la)"' \
		"'http://127.0.0.1:$${GATEWAY_PORT:-8000}/fhir/Patient?_count=1'"
	@echo "(demo-la: one authority's system; demo-admin: every right, including shielded and audit)"
	@echo
	$(CLI) serve

test: $(STAMP) /usr/bin/chromium $(CLIENTS) ## run the whole test suite (SQLite, and PostgreSQL when GATEWAY_TEST_POSTGRES_URL is set)
	$(BIN)/python -m pytest -n $(PYTEST_WORKERS) --dist loadfile $(PYTEST_ARGS)

# The dashboard's browser test drives a system Chromium at /usr/bin/chromium (Playwright
# downloads no browser). When it is missing, the script says so, then installs Debian's package
# with apt-get as root, or says how to get it and stops.
/usr/bin/chromium:
	scripts/install-chromium.sh

# The real-client tests drive the gateway with npm packages (fhir-kit-client): npm ci installs
# the versions package-lock.json pins into tests/clients/node_modules (git-ignored), again
# whenever the pins change. Node.js and npm come with the machine (README "make test").
$(CLIENTS): tests/clients/package.json tests/clients/package-lock.json
	npm ci --prefix tests/clients --no-audit --no-fund --loglevel=error
	touch $@

lint: $(STAMP) ## ruff, mypy (strict on adapter/) and the layer check (scripts/check_layers.py)
	$(BIN)/ruff check adapter tests bench scripts wsgi.py
	$(BIN)/mypy
	$(BIN)/python scripts/check_layers.py

bench: $(STAMP) ## run the benchmarks in bench/ (or those in BENCH="http mapping"): each figure with its baseline, ratio and goal
	$(BIN)/python -m bench $(BENCH)

golden: $(STAMP) ## regenerate tests/golden outputs (review the diff before committing)
	$(BIN)/python -m tests.golden_regen

clean: ## remove the virtual environment and caches (keeps instance/)
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache tests/clients/node_modules
