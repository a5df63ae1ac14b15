"""Shared fixtures: the ../shared material, tiny models built from configs, small data sets."""

from __future__ import annotations

import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared"

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")


def shared_path(relative: str) -> Path:
    """A file under ../shared; fails (not skips) under CI when it is missing."""
    path = SHARED / relative
    if not path.exists():
        message = f"{path} is missing (../shared must sit beside the checkout)"
        if os.environ.get("CI") == "true":
            pytest.fail(message)
        pytest.skip(message)
    return path


TINY = {"hidden_size": 32, "num_hidden_layers": 2, "num_attention_heads": 4, "intermediate_size": 64, "seed": 0}
TOKENIZER_OF_FAMILY = {"llama": "nucleotide", "mistral": "nucleotide", "mixtral": "nucleotide", "opt": "nucleotide",
                       "bert": "nucleotide", "esm": "esm", "dnabert2": "nucleotide"}


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory):
    """Build (once per session) a tiny model directory of a family, with its tokenizer."""
    from seqpeft.models import prepare_model
    from seqpeft.tokenize import build_tokenizer

    root = tmp_path_factory.mktemp("tiny_models")
    built: dict[tuple, Path] = {}

    def make(family: str, **sizes) -> Path:
        """``sizes`` override TINY's (e.g. QLORA_TINY, widths that bitsandbytes' 4-bit kernels take)."""
        key = (family, *sorted(sizes.items()))
        if key not in built:
            tokenizer_kind = TOKENIZER_OF_FAMILY[family]
            tokenizer_dir = root / f"tokenizer_{tokenizer_kind}"
            if not tokenizer_dir.exists():
                build_tokenizer({"kind": tokenizer_kind}, tokenizer_dir)
            spec = {"build": {"family": family, **TINY, **sizes}, "tokenizer": tokenizer_kind, "max_length": 128}
            out = root / "_".join(f"{part}" if isinstance(part, str) else f"{part[0]}{part[1]}" for part in key)
            prepare_model(family, spec, out, tokenizer_dir)
            built[key] = out
        return built[key]

    return make


# Layer widths that every bitsandbytes 4-bit kernel takes (seqpeft.qlora.kernels_accept): QLoRA
# tests use them so that every Linear layer is quantized; TINY's widths leave most unquantized.
QLORA_TINY = {"hidden_size": 64, "intermediate_size": 128}


@pytest.fixture(params=["packed", "unpacked"])
def bnb_cpu_path(request, monkeypatch) -> str:
    """Both CPU paths of bitsandbytes' 4-bit inference: the fused kernel on repacked weights (CPUs
    with AVX512-BF16 only) and the plain dequantize-and-matmul one (switched off packing)."""
    from bitsandbytes.nn import modules as bnb_modules

    if request.param == "packed" and not bnb_modules.has_avx512bf16():
        pytest.skip("bitsandbytes' packed 4-bit CPU kernel needs a CPU with AVX512-BF16, which this one lacks")
    if request.param == "unpacked":
        monkeypatch.setattr(bnb_modules, "has_avx512bf16", lambda: False)
    return request.param


OFFLINE_ENV = {**os.environ, "HF_HUB_OFFLINE": "1", "http_proxy": "http://127.0.0.1:9", "https_proxy": "http://127.0.0.1:9"}


@dataclass
class DemoRun:
    """The README's demo DAG (config/demo.yaml), run for real in ``workdir`` with results in ``results``."""

    workdir: Path
    config: dict

    @property
    def results(self) -> Path:
        return self.workdir / "results"

    @property
    def config_path(self) -> Path:
        return self.workdir / "config.yaml"

    def snakemake(self, *args, config_path: Path | None = None, check: bool = True) -> str:
        """Run Snakemake on the demo's working directory (local profile, 2 cores); output text."""
        command = [sys.executable, "-m", "snakemake", "-s", str(REPO / "Snakefile"), "-d", str(self.workdir),
                   "--profile", str(REPO / "profiles" / "local"), "--cores", "2", *map(str, args),
                   "--configfile", str(config_path or self.config_path)]
        result = subprocess.run(command, cwd=self.workdir, env=OFFLINE_ENV, capture_output=True, text=True, timeout=1800)
        if check and result.returncode != 0:
            pytest.fail(f"snakemake {' '.join(map(str, args))} failed:\n{result.stdout[-4000:]}\n{result.stderr[-4000:]}")
        return result.stdout + result.stderr


@pytest.fixture(scope="session")
def demo_run(tmp_path_factory) -> DemoRun:
    """One real run of the whole demo DAG per test session, shared by the pipeline and report tests
    (which only read its results, rerun what they delete, or dry-run changed configs)."""
    workdir = tmp_path_factory.mktemp("demo")
    config = yaml.safe_load((REPO / "config" / "demo.yaml").read_text())
    config["results"] = "results"
    run = DemoRun(workdir, config)
    run.config_path.write_text(yaml.safe_dump(config, sort_keys=False))
    run.snakemake()
    return run


def motif_task(root: Path, model_dir: Path, **source) -> Path:
    """A small planted-motif DNA task under ``root/data``, tokenized for ``model_dir`` into
    ``root/cache.npz``; ``source`` overrides the generator's settings (seed, split sizes, ...)."""
    from seqpeft.demo_data import generate_source
    from seqpeft.tokenize import tokenize_task

    generate_source({"synthetic": "dna", "seed": 3, "n_train": 400, "n_dev": 64, "n_test": 64, "length": 40,
                     "motif_copies": 2, **source}, root / "data")
    tokenize_task({"kind": "sequence_classification"}, root / "data", model_dir, root / "cache.npz")
    return root / "cache.npz"


def dev_losses(run_dir: Path) -> list[float]:
    """The dev loss of every evaluation of a run, in order."""
    import csv

    with open(run_dir / "history.csv") as handle:
        return [float(row["dev_loss"]) for row in csv.DictReader(handle)]


def assert_reloaded_run_predicts_its_test_accuracy(run_dir: Path, test_csv: Path, metrics: dict, tmp: Path) -> None:
    """Save -> load round trip: ``seqpeft predict`` on the saved artifacts reproduces the run's test accuracy."""
    import csv

    import numpy as np

    from seqpeft.evaluate import load_predictor, predict_file

    predict_file(load_predictor(run_dir / "artifacts"), test_csv, tmp / "pred.csv")
    with open(tmp / "pred.csv") as handle:
        predictions = np.array([int(row["prediction"]) for row in csv.DictReader(handle)])
    with open(test_csv) as handle:
        labels = np.array([int(row["label"]) for row in csv.DictReader(handle)])
    assert float(np.mean(predictions == labels)) == pytest.approx(metrics["test"]["accuracy"], abs=1e-9)


_JOB_RUNNER = """
import json, sys
from seqpeft.train import FinetuneJob, run_finetune
run_finetune(FinetuneJob.from_dict(json.loads(sys.argv[1])))
"""


def interrupt_job_after_checkpoint(job: dict, sig: int, timeout: float = 300) -> str:
    """Run a fine-tuning job (``FinetuneJob.to_dict()`` form) in a subprocess, send ``sig`` once its
    first checkpoint exists, and return its output; the job must not have finished."""
    import json
    import time

    run_dir = Path(job["out_dir"])
    process = subprocess.Popen([sys.executable, "-c", _JOB_RUNNER, json.dumps(job)], stdout=subprocess.PIPE,
                               stderr=subprocess.STDOUT, text=True)
    checkpoint = run_dir / "checkpoint" / "state.pt"
    deadline = time.monotonic() + timeout
    while not checkpoint.exists():
        assert process.poll() is None, process.communicate()[0]
        assert time.monotonic() < deadline, "no checkpoint appeared"
        time.sleep(0.05)
    process.send_signal(sig)
    output, _ = process.communicate(timeout=120)
    assert process.returncode != 0, output
    return output


def run_job_in_subprocess(job: dict) -> str:
    """Run a fine-tuning job (``FinetuneJob.to_dict()`` form) to the end in a fresh process; its stdout."""
    import json

    return subprocess.run([sys.executable, "-c", _JOB_RUNNER, json.dumps(job)], capture_output=True, text=True,
                          check=True).stdout
