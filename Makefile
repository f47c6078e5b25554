# labkit: every target creates .venv and installs what it needs first.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: setup run test lint lab bench clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e ".[lab,dev,tensorboard,sweep]"
	touch $(STAMP)

setup: $(STAMP)  ## create .venv with labkit, the lab and the test tools

run: $(STAMP)  ## every notebook on the bundled digits (default preset) into runs/notebooks/default
	$(BIN)/python -m labkit notebooks --preset default

test: $(STAMP)  ## ruff, then every test (CI runs exactly this)
	$(BIN)/ruff check labkit tests benchmarks
	$(BIN)/python -m pytest

lint: $(STAMP)
	$(BIN)/ruff check labkit tests benchmarks

# Kernels talk over IPC (Unix sockets in Jupyter's runtime folder, readable by their owner only), not TCP ports
# on 127.0.0.1 that every user of a shared machine can reach; tests/test_lab_server.py starts JupyterLab with
# these flags.
LAB_FLAGS := --ServerApp.ip=127.0.0.1 --KernelManager.transport=ipc

lab: $(STAMP)  ## JupyterLab on the notebooks, local only, with the venv's Python as the kernel named "labkit"
	$(BIN)/python -m ipykernel install --sys-prefix --name labkit --display-name "Python (labkit)" >/dev/null
	PYTHONPATH=$(CURDIR) $(BIN)/jupyter lab $(LAB_FLAGS) --ServerApp.root_dir=notebooks \
		--MappingKernelManager.default_kernel_name=labkit

clean:
	rm -rf runs .pytest_cache .ruff_cache
