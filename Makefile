# seacast: `make demo` runs the whole job on the embedded North Sea twin; `make test` runs the tests.
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(VENV)/bin/pip
SEACAST := $(VENV)/bin/seacast
DATA ?= copernicus
STAMP := $(VENV)/.installed

.PHONY: setup test demo lint format bench paper paper-quick clean

setup: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(PY) || python3 -m venv $(VENV)
	$(PIP) install --quiet --upgrade pip
	$(PIP) install --quiet torch==2.13.0
	$(PIP) install --quiet -e '.[dev]'
	touch $(STAMP)

test: setup
	$(PY) -m pytest -q

demo: setup
	$(SEACAST) pipeline run demo --jobs 2

lint: setup
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

format: setup
	$(VENV)/bin/ruff check --fix .
	$(VENV)/bin/ruff format .

bench: setup
	for b in benchmarks/*.py; do echo "== $$b"; $(PY) $$b || exit 1; done

paper: setup
	$(SEACAST) pipeline run paper --set DATA=$(DATA)

paper-quick: setup
	$(SEACAST) pipeline run paper-quick --jobs 2

clean:
	rm -rf data runs reports forecasts .seacast .pytest_cache
