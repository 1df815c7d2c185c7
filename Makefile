# The two commands a newcomer needs: `make demo` and `make test`. Both set up .venv first.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp
# checkov in a virtualenv of its own: its pinned boto3 clashes with the dev extra's
CHECKOV_VERSION := 3.3.30
CHECKOV_VENV := $(VENV)/checkov
CHECKOV_STAMP := $(CHECKOV_VENV)/.installed-$(CHECKOV_VERSION)
export JSII_SILENCE_WARNING_END_OF_LIFE_NODE_VERSION := 20

.PHONY: install checkov-venv demo test unit integration lint bench clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -e '.[dev]'
	touch $(STAMP)

$(CHECKOV_STAMP):
	rm -rf $(CHECKOV_VENV)
	$(PYTHON) -m venv $(CHECKOV_VENV)
	$(CHECKOV_VENV)/bin/python -m pip install -q --upgrade pip
	$(CHECKOV_VENV)/bin/python -m pip install -q 'checkov==$(CHECKOV_VERSION)'
	touch $@

checkov-venv: $(CHECKOV_STAMP)  ## checkov for tests/deploy/test_template_checks.py

install: $(STAMP) $(CHECKOV_STAMP)

demo: $(STAMP)  ## run the example app on the embedded local AWS (no account, no Docker)
	$(BIN)/python examples/run_demo.py

test: $(STAMP) $(CHECKOV_STAMP)  ## the whole suite: unit + integration (moto server over HTTP)
	$(BIN)/python -m pytest -q -p no:cacheprovider

unit: $(STAMP)
	$(BIN)/python -m pytest -q -p no:cacheprovider tests/unit

integration: $(STAMP)
	$(BIN)/python -m pytest -q -p no:cacheprovider -m integration

lint: $(STAMP)
	$(BIN)/ruff check cloudq tests examples benchmarks
	$(BIN)/mypy

bench: $(STAMP)
	$(BIN)/python benchmarks/roundtrip.py
	$(BIN)/python benchmarks/chord.py
	$(BIN)/python benchmarks/aio_send.py --run
	$(BIN)/python benchmarks/vs_celery.py

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache build *.egg-info
