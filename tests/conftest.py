"""Shared fixtures: the ../shared material, tiny models built from configs, small data sets."""

from __future__ import annotations

import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml

from helpers import REPO, TINY, TOKENIZER_OF_FAMILY

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory):
    """Build (once per session) a tiny model directory of a family, with its tokenizer."""
    from seqpeft.models.prepare import prepare_model
    from seqpeft.data.tokenize import build_tokenizer

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
    for spec in config["sources"].values():  # pre-staged data (../shared) is relative to the checkout
        if spec.get("local"):
            spec["local"] = str(REPO / spec["local"])
    run = DemoRun(workdir, config)
    run.config_path.write_text(yaml.safe_dump(config, sort_keys=False))
    run.snakemake()
    return run


def pytest_collection_modifyitems(config, items):
    """``@pytest.mark.gpu`` tests (tests/test_gpu.py; ``make gpu-check``) need a CUDA GPU this torch
    can use: skipped with the reason where none is visible."""
    gpu_tests = [item for item in items if item.get_closest_marker("gpu")]
    if not gpu_tests:
        return
    import torch

    if torch.cuda.is_available():
        return
    build = f"CUDA {torch.version.cuda}" if torch.version.cuda else "a CPU-only build"
    skip = pytest.mark.skip(reason=f"needs a CUDA GPU: torch {torch.__version__} ({build}) sees none")
    for item in gpu_tests:
        item.add_marker(skip)
@pytest.fixture(scope="session")
def real_hub(tmp_path_factory):
    """The offline hub serving every hub model the shipped configs name, in its real layout
    (tests/hub_server.py: ``served_repo(model entry)`` says which stand-in serves an entry).
    Yields the environment a process needs to reach it (``HF_ENDPOINT`` and a fresh ``HF_HOME``)."""
    from helpers import shared_path
    from hub_server import HubServer, hub_env, real_layout_hub

    shared_path("models/layouts/LAYOUTS.md")
    with HubServer(real_layout_hub()) as url:
        yield hub_env(url, tmp_path_factory.mktemp("real_hub"))
