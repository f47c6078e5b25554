# labkit: every target creates .venv and installs what it needs first.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: setup run test lint lab bench clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e ".[lab,dev,tensorboard]"
	touch $(STAMP)

setup: $(STAMP)  ## create .venv with labkit, the lab and the test tools

run: $(STAMP)  ## every notebook on the bundled digits (default preset) into runs/notebooks/default
	$(BIN)/python -m labkit notebooks --preset default

test: $(STAMP)  ## ruff, then every test (CI runs exactly this)
	$(BIN)/ruff check labkit tests benchmarks
	$(BIN)/python -m pytest

lint: $(STAMP)
	$(BIN)/ruff check labkit tests benchmarks

lab: $(STAMP)  ## JupyterLab on the notebooks, local only
	PYTHONPATH=$(CURDIR) $(BIN)/jupyter lab --ServerApp.ip=127.0.0.1 --ServerApp.root_dir=notebooks

clean:
	rm -rf runs .pytest_cache .ruff_cache
