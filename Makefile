# The two commands of the README: `make demo` (install + offline demo DAG) and `make test`.
# CPU install: torch is pinned to the CPU wheel in the same pip command as everything else,
# otherwise pip resolves a multi-GB CUDA build. For GPUs see "GPU install" in the README.
PYTHON ?= python3
VENV ?= .venv
TORCH ?= torch==2.13.0
BIN := $(VENV)/bin
CORES ?= 2

.PHONY: install demo test dryrun lint clean-demo

$(BIN)/seqpeft: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet "$(TORCH)" -e ".[dev,reports]"
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

clean-demo:
	rm -rf results/demo
