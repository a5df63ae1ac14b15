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

.PHONY: install demo test dryrun lint clean-demo lock gpu-check

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

# On a GPU node, in a venv with requirements/gpu.lock (README: GPU install): the @pytest.mark.gpu
# tests (tests/test_gpu.py) and benchmarks/gpu.py. Elsewhere one line says what it needs.
gpu-check:
	@if ! $(BIN)/python -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)" 2>/dev/null; then \
		echo "make gpu-check needs a CUDA GPU that $(BIN)/python's torch can use: none here, nothing run"; \
	else \
		set -e; HF_HUB_OFFLINE=1 $(BIN)/python -m pytest -q -m gpu -rs; $(BIN)/python benchmarks/gpu.py; \
	fi

dryrun: install
	$(BIN)/snakemake -n --quiet rules

lint: install
	$(BIN)/snakemake --lint
	$(BIN)/snakemake --lint --configfile config/demo.yaml

lock:
	$(PYTHON) requirements/lock.py "$(TORCH)"

clean-demo:
	rm -rf results/demo
