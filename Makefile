# The two commands of the README: `make demo` (install + offline demo DAG) and `make test`.
# CPU install: every package at the version of requirements/cpu.lock (what CI tested), torch's
# CPU wheel among them; an unpinned torch resolves a multi-GB CUDA build. `make lock` rewrites the
# locks from pyproject.toml. For GPUs see "GPU install" in the README (requirements/gpu.lock).
PYTHON ?= python3
VENV ?= .venv
TORCH ?= torch==2.13.0
PIP ?= pip==26.3
LOCK := requirements/cpu.lock
BIN := $(VENV)/bin
CORES ?= 2

.PHONY: install demo test dryrun lint clean-demo lock

$(BIN)/seqpeft: pyproject.toml $(LOCK)
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet "$(PIP)"
	$(BIN)/pip install --quiet -r $(LOCK) -e ".[dev,reports]"
	touch $@

install: $(BIN)/seqpeft

demo: install
	HF_HUB_OFFLINE=1 $(BIN)/snakemake --profile profiles/local --configfile config/demo.yaml --cores $(CORES)

test: install
	HF_HUB_OFFLINE=1 $(BIN)/python -m pytest -q

dryrun: install
	$(BIN)/snakemake -n --quiet rules

lint: install
	$(BIN)/snakemake --lint
	$(BIN)/snakemake --lint --configfile config/demo.yaml

lock:
	$(PYTHON) requirements/lock.py "$(TORCH)"

clean-demo:
	rm -rf results/demo
