"""The benchmark scripts run and end with their stated last line.

Speed is not asserted here (benchmarks, not timed tests): these run the scripts' smoke modes
and check that each prints its figures in the documented ``name: value`` form, with values that
make sense (fractions in [0, 1], counts that are whole numbers).
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from helpers import SHARED, shared_path

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"
NUMBER = r"[+-]?\d+(?:\.\d+)?"


def run_script_lines(name: str, *args: str, timeout: int = 300) -> list[str]:
    env = {**os.environ, "SEQPEFT_SHARED": str(SHARED), "HF_HUB_OFFLINE": "1"}
    finished = subprocess.run([sys.executable, str(BENCHMARKS / name), *args], capture_output=True, text=True,
                              env=env, timeout=timeout)
    assert finished.returncode == 0, finished.stdout[-3000:] + finished.stderr[-3000:]
    return finished.stdout.strip().splitlines()


def run_script(name: str, *args: str, timeout: int = 300) -> str:
    return run_script_lines(name, *args, timeout=timeout)[-1]


def test_throughput_quick_prints_speedup_and_mcc_delta():
    shared_path("models/mistral-dna-v1-1m-hg38-tf0")
    shared_path("data/gue/tf/0")
    lines = run_script_lines("throughput.py", "--quick", "--train-samples", "64", "--dev-samples", "32")
    match = re.fullmatch(rf"speedup_vs_seed_recipe: (\d+\.\d\d) mcc_delta: ([+-]\d\.\d{{3}})", lines[-1])
    assert match, lines[-1]
    # The last line is computed from the table above it: samples/s and dev MCC of each recipe.
    rows = {cells[0]: [float(value.replace(",", "")) for value in cells[1:]]
            for cells in (line.split() for line in lines) if cells and cells[0] in ("seed_recipe", "seqpeft")}
    assert set(rows) == {"seed_recipe", "seqpeft"}, lines
    for name, (samples_per_s, seconds, mcc) in rows.items():
        assert samples_per_s > 0 and seconds > 0, name
        assert -1 <= mcc <= 1, (name, mcc)
    speedup, mcc_delta = float(match.group(1)), float(match.group(2))
    assert speedup == pytest.approx(rows["seqpeft"][0] / rows["seed_recipe"][0], rel=0.01, abs=0.01)
    assert mcc_delta == pytest.approx(rows["seqpeft"][2] - rows["seed_recipe"][2], abs=0.002)


def test_step_anatomy_prints_the_step_speedup_of_batch_shapes_and_optimizer():
    shared_path("models/mistral-dna-v1-1m-hg38-tf0")
    shared_path("data/gue/tf/0")
    last = run_script("step_anatomy.py", "--steps", "2", "--repeats", "1")
    match = re.fullmatch(r"seqpeft_shape_speedup: (\d+\.\d\d)", last)
    assert match, last
    assert float(match.group(1)) > 0


def test_padding_prints_fractions_in_unit_interval():
    for relative in ("models/mistral-dna-v1-1m-hg38-tf0", "data/gue/tf/0"):
        shared_path(relative)
    last = run_script("padding.py", "--quick")
    match = re.fullmatch(r"padding_fraction: (\d\.\d{3}) seed_recipe_padding_fraction: (\d\.\d{3})", last)
    assert match, last
    ours, seed = float(match.group(1)), float(match.group(2))
    assert 0 <= ours <= seed <= 1


def test_token_cache_quick_prints_speedup():
    shared_path("data/gue/tf/0")
    last = run_script("token_cache.py", "--quick")
    match = re.fullmatch(rf"cache_speedup: (\d+\.\d)", last)
    assert match and float(match.group(1)) > 1, last


def test_bootstrap_quick_prints_speedups_and_the_full_benchmark_minutes():
    shared_path("data/gue/tf/0")
    lines = run_script_lines("bootstrap.py", "--quick")
    match = re.fullmatch(rf"statistics_speedup: ({NUMBER}) regression_speedup: ({NUMBER}) "
                         rf"full_benchmark_minutes: ({NUMBER})", lines[-1])
    assert match and all(float(value) > 0 for value in match.groups()), lines[-1]
    assert not any(line.rstrip().endswith("NO") for line in lines), lines  # the same interval both ways


def test_dag_scale_quick_counts_jobs():
    last = run_script("dag_scale.py", "--quick")
    match = re.fullmatch(r"dryrun_seconds: (\d+\.\d) jobs: (\d+)", last)
    assert match, last
    # 2 GUE tasks x 2 DNA models x 10 methods x 4 seeds + SignalP x ESM-2 x 9 methods (no prefix) x 6 folds
    assert int(match.group(2)) == 2 * 2 * 10 * 4 + 9 * 6


def test_gpu_dry_counts_flops_and_skips_without_gpu():
    import torch

    finished = subprocess.run([sys.executable, str(BENCHMARKS / "gpu.py"), "--dry"], capture_output=True, text=True, timeout=300)
    assert finished.returncode == 0, finished.stderr[-3000:]
    lines = finished.stdout.strip().splitlines()
    esm2 = next(line for line in lines if line.strip().startswith("esm2_650m_lora"))
    params = int(re.search(r"(\d{3},\d{3},\d{3})", esm2).group(1).replace(",", ""))
    assert 640e6 < params < 660e6
    if not torch.cuda.is_available():
        assert lines[-1] == "skipped: no GPU"


def _gpu_benchmark():
    """benchmarks/gpu.py as a module (its own directory first, for ``_common``)."""
    import importlib

    sys.path.insert(0, str(BENCHMARKS))
    try:
        return importlib.import_module("gpu")
    finally:
        sys.path.remove(str(BENCHMARKS))


@pytest.mark.slow  # ~30-60 s on 2 shared cores: the Trainer and transformers imports dominate
def test_gpu_benchmark_measures_both_recipes_on_the_cpu():
    """The benchmark's measuring code on a tiny ESM with the CPU as its device: what runs on a GPU
    (the workflow's training step with its current signature, the Trainer recipe, symmetric timing)."""
    import torch

    gpu = _gpu_benchmark()
    tiny = {"model_type": "esm", "vocab_size": 33, "hidden_size": 64, "num_hidden_layers": 2, "num_attention_heads": 4,
            "intermediate_size": 128, "max_position_embeddings": 80, "position_embedding_type": "rotary",
            "pad_token_id": 1, "mask_token_id": 32, "token_dropout": False}
    cpu = torch.device("cpu")
    lora = gpu.Case("tiny_lora", "esm", tiny, "lora", {"r": 4, "target_modules": ["query", "value"]}, max_length=32,
                    batch_size=8)
    full = gpu.Case("tiny_full", "esm", tiny, "full", {}, max_length=32, batch_size=8)
    for case, recipe in ((lora, gpu.run_seqpeft), (full, gpu.run_seqpeft), (lora, gpu.run_seed_recipe)):
        result = recipe(case, 5, cpu, warmup=2)
        assert result["timed_steps"] == 3 and result["tokens_per_s"] > 0, (case.name, result)
        assert result["precision"] == "fp32"  # what training.precision: auto runs on a CPU


def test_gpu_benchmark_flops_per_method_and_peak_by_gpu():
    gpu = _gpu_benchmark()
    case = next(c for c in gpu.CASES if c.name == "esm2_650m_lora")
    total, embedding = gpu.count_params(case)
    assert embedding == 33 * 1280  # token embeddings only: rotary positions have no table
    trainable = gpu.lora_trainable(case)
    assert 0 < trainable < total / 100
    full = gpu.flops_per_token("full", total, embedding, total)
    lora = gpu.flops_per_token("lora", total, embedding, trainable)
    assert full == 6 * (total - embedding) and lora == 4 * (total - embedding) + 6 * trainable
    assert gpu.peak_tflops("NVIDIA H100 PCIe", None) == 756.0 and gpu.peak_tflops("NVIDIA H100 80GB HBM3", None) == 989.0
    assert gpu.peak_tflops("NVIDIA A100-SXM4-80GB", None) == 312.0 and gpu.peak_tflops("Tesla T4", None) is None
    assert gpu.peak_tflops("Tesla T4", 65.0) == 65.0
