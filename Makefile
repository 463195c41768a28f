# Two commands do everything on a fresh machine: `make demo` and `make test`.
# Both install what they need first (virtualenv + pinned packages, Azurite into node_modules).
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
PY_STAMP := $(VENV)/.installed
NODE_STAMP := node_modules/.installed
# checkov in its own virtualenv (its pins clash with .venv): `make scan` and the scan tests.
SCAN_VENV ?= .venv-scan
SCAN_STAMP := $(SCAN_VENV)/.installed
# Two test processes by default (an Azurite each, one training run shared); a module stays
# in one process so its module-scoped fixtures are built once; the longest modules start
# first (tests/conftest.py, docs/performance.md). PYTEST_ARGS= runs serially.
PYTEST_ARGS ?= -n auto --dist loadfile

.DEFAULT_GOAL := help

help: ## List the targets
	@grep -hE '^[a-zA-Z_-]+:.*## ' $(MAKEFILE_LIST) | sort | \
	  awk 'BEGIN {FS = ":.*## "}; {printf "  %-14s %s\n", $$1, $$2}'

$(PY_STAMP): requirements.lock
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check -r requirements.lock
	@touch $@

$(NODE_STAMP): package.json package-lock.json
	npm ci --no-audit --no-fund --loglevel=error
	@touch $@

setup: $(PY_STAMP) $(NODE_STAMP) ## Install the virtualenv and Azurite (idempotent)

browser: ## Install headless Chromium for the report tests (skipped with SKIP_BROWSER_TESTS=1)
	@if [ "$${SKIP_BROWSER_TESTS:-}" != 1 ]; then scripts/ensure-chromium.sh; fi

# Everything the tests use is installed first, so that pytest's time is the tests' own.
test: setup browser $(SCAN_STAMP) ## Run the test suite (starts its own Azurite on a free loopback port)
	$(PY) -m pytest $(PYTEST_ARGS)

test-fast: setup ## The quick tests only: no Azurite, no trainer or job processes, no browser (~30 s)
	$(PY) -m pytest -m "not slow and not azurite" $(PYTEST_ARGS)

demo: setup local-up ## Run the whole loop on the local default target: train, deploy, score
	$(PY) -m adf trigger
	$(PY) -m deployer register-and-deploy
	$(PY) -m deployer invoke --input data/iris_csv.csv

ui: setup ## Import the published training runs, then serve the MLflow UI on 127.0.0.1 (UI_PORT, 5000)
	$(PY) -m workspace ui

local-up: setup ## Start Azurite on 127.0.0.1 (data in .local/) and create the datastore container
	$(PY) -m workspace up

local-down: ## Stop the local Azurite
	@if [ -x $(PY) ]; then $(PY) -m workspace down; else echo "nothing to stop"; fi

local-status: ## Say whether the local Azurite answers
	$(PY) -m workspace status

lock: ## Re-resolve requirements.in into requirements.lock
	rm -rf .lockvenv && $(PYTHON) -m venv .lockvenv
	.lockvenv/bin/pip install --quiet -r requirements.in
	{ echo '# Full pinned set for reproducible installs (generated from requirements.in by `make lock`).'; \
	  .lockvenv/bin/pip freeze --exclude pip; } > requirements.lock
	rm -rf .lockvenv

env-example: $(PY_STAMP) ## Regenerate .env.example from the settings definition
	$(PY) -c "from workspace.settings import render_env_example as r; open('.env.example', 'w').write(r())"

clean: local-down ## Remove the virtualenv, node_modules and local state
	rm -rf $(VENV) $(SCAN_VENV) node_modules .local .pytest_cache outputs

.PHONY: help setup browser test test-fast demo ui local-up local-down local-status lock env-example clean

# ---------------------------------------------------------------- Azure infrastructure (bicep/, terraform/)
# make deploy-infra [IAC=bicep|terraform LOCATION=westeurope PREFIX=irisops PRIVATE_NETWORKING=false ALLOWED_IP=]
# (PRIVATE_NETWORKING=true needs ALLOWED_IP, your public IPv4 address: docs/azure.md, "Private networking").
# See docs/azure.md. The scan runs checkov in its own virtualenv (its pins clash with .venv).
IAC ?= bicep
LOCATION ?= westeurope
PREFIX ?= irisops
PRIVATE_NETWORKING ?= false
ALLOWED_IP ?=
AZURE_SH = IAC="$(IAC)" LOCATION="$(LOCATION)" PREFIX="$(PREFIX)" PRIVATE_NETWORKING="$(PRIVATE_NETWORKING)" \
  ALLOWED_IP="$(ALLOWED_IP)" PYTHON="$(PYTHON)" bash bicep/azure.sh

deploy-infra: ## Deploy bicep/main.bicep (IAC=terraform: terraform/) to Azure (az login first), then write .env
	$(AZURE_SH) deploy

what-if: ## Show what deploy-infra would change in Azure, changing nothing (IAC=terraform: plan)
	$(AZURE_SH) what-if

destroy: ## Delete the Azure resource group (IAC=terraform: terraform destroy; asks first, YES=1 skips)
	$(AZURE_SH) destroy

$(SCAN_STAMP): bicep/requirements-scan.txt
	@test -x $(SCAN_VENV)/bin/python || $(PYTHON) -m venv $(SCAN_VENV)
	$(SCAN_VENV)/bin/python -m pip install --quiet --disable-pip-version-check -r bicep/requirements-scan.txt
	@touch $@

scan: $(SCAN_STAMP) ## Scan bicep/ and terraform/ with checkov: fails on any parsing error or failed check
	$(PYTHON) bicep/scan.py --checkov $(SCAN_VENV)/bin/checkov
	$(PYTHON) bicep/scan.py --framework terraform --checkov $(SCAN_VENV)/bin/checkov

.PHONY: deploy-infra what-if destroy scan

# ---------------------------------------------------------------- scoring benchmark
# Not part of `make test`: several minutes, timing on this machine (docs/performance.md).
bench: setup ## Benchmark scoring (floor vs deployer invoke vs mlflow) and the sweep → docs/performance.md
	$(PY) -m bench $(BENCH_ARGS)
	$(PY) -m bench.sweep

.PHONY: bench
