"""On a real GPU (``make gpu-check``): the paths no CPU test can run. Skipped with the reason where
torch sees no CUDA GPU (tests/conftest.py); the two-GPU tests also where fewer than two are visible.

Each trains a tiny model for real and checks what the CPU tests can only mock: bf16 autocast and
its record, the peak-memory measurement, the CUDA generator in a resumed run, QLoRA's 4-bit
kernels with training and prediction on one device, DDP and FSDP over NCCL.
"""

from __future__ import annotations

import json
import os
import signal

# cuBLAS reads its workspace setting when this process first uses it; training.deterministic sets it
# in each fine-tuning job's fresh process, here it must be set before any test touches the GPU.
os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")

import pytest  # noqa: E402
import torch  # noqa: E402

from helpers import demo_config, QLORA_TINY, assert_reloaded_run_predicts_its_test_accuracy, finetune_job, motif_task  # noqa: E402
from seqpeft.training.launch import run_finetune  # noqa: E402

pytestmark = pytest.mark.gpu

TRAINING = {"epochs": 2, "batch_size": 32, "learning_rate": 4e-3, "device": "auto"}


@pytest.fixture(scope="module")
def task(tmp_path_factory, tiny_model_dir):
    root = tmp_path_factory.mktemp("gpu")
    model_dir = tiny_model_dir("llama", **QLORA_TINY)
    motif_task(root, model_dir, seed=4, n_train=192, n_dev=48, n_test=48)
    return root, model_dir


def _job(task, out, method="full", gpus=1, **training):
    root, model_dir = task
    return finetune_job(root / "cache.npz", model_dir, out, task="t", method=method,
                        method_spec={"r": 4} if "lora" in method else None, training={**TRAINING, **training}, gpus=gpus)


def _need_gpus(count: int) -> None:
    if torch.cuda.device_count() < count:
        pytest.skip(f"needs {count} GPUs: {torch.cuda.device_count()} visible")


def test_bf16_fine_tune_on_the_gpu_records_precision_and_cuda_peak(task, tmp_path):
    metrics = run_finetune(_job(task, tmp_path / "run"))
    major, _ = torch.cuda.get_device_capability()
    assert metrics["device"].startswith("cuda") and metrics["memory_measure"] == "cuda_max_memory_allocated"
    assert metrics["precision"] == ("bf16" if major >= 8 else "fp32"), metrics["precision_reason"]
    assert 0 < metrics["peak_memory_mb"] < torch.cuda.get_device_properties(0).total_memory / 2**20
    assert metrics["test"]["accuracy"] > 0.5


def test_deterministic_gpu_runs_repeat_and_resume_exactly(task, tmp_path):
    from helpers import interrupt_job_after_checkpoint

    first = run_finetune(_job(task, tmp_path / "a", method="lora", deterministic=True, checkpoint_minutes=0.001))
    again = run_finetune(_job(task, tmp_path / "b", method="lora", deterministic=True, checkpoint_minutes=0.001))
    assert again["test"] == first["test"]
    job = _job(task, tmp_path / "c", method="lora", deterministic=True, checkpoint_minutes=0.001)
    interrupt_job_after_checkpoint(job.to_dict(), signal.SIGTERM)
    resumed = run_finetune(job)  # dropout continues from the saved CUDA generator
    assert resumed["test"] == first["test"]


def test_qlora_trains_and_predicts_on_the_gpu(task, tmp_path):
    metrics = run_finetune(_job(task, tmp_path / "run", method="qlora"))
    assert metrics["quantization"]["quantized_layers"] > 0 and metrics["device"].startswith("cuda")
    lora = run_finetune(_job(task, tmp_path / "lora", method="lora"))
    assert metrics["total_params"] == lora["total_params"]  # 4-bit weights counted whole
    root, _ = task
    assert_reloaded_run_predicts_its_test_accuracy(tmp_path / "run", root / "data" / "test.csv", metrics, tmp_path)


@pytest.mark.parametrize("mode, method", [("ddp", "lora"), ("fsdp", "full")])
def test_two_gpu_job_trains_like_one(task, tmp_path, mode, method):
    _need_gpus(2)
    one = run_finetune(_job(task, tmp_path / "one", method=method, deterministic=True))
    two = run_finetune(_job(task, tmp_path / "two", method=method, gpus=2, distributed=mode, deterministic=True))
    assert two["world_size"] == 2 and two["distributed"] == mode
    assert two["test"]["accuracy"] == pytest.approx(one["test"]["accuracy"], abs=0.05)
    assert 0 < two["peak_memory_mb"] and json.loads((tmp_path / "two" / "metrics.json").read_text())["world_size"] == 2


def test_rehearsal_of_demo_jobs_on_the_gpu(tmp_path):
    """``seqpeft rehearse`` of demo jobs whose model size asks for one GPU: every row ok, run on CUDA
    (the rehearsal's peak memory is CUDA's, far below the CPU process's resident memory)."""
    import csv
    import subprocess
    import sys

    import yaml

    from helpers import REPO

    config = demo_config()
    config.update(results="results", published=None)
    config.setdefault("resources", {}).setdefault("sizes", {})["tiny"] = {"gpu": 1, "mem_mb": 8000, "runtime": 30}
    config["methods"]["qlora"] = {"r": 8, "lora_alpha": 16}
    config["training"]["device"] = "auto"
    config["experiments"] = [{"tasks": ["demo_tf"], "models": ["tiny_llama_dna"], "methods": ["full", "lora", "qlora"]},
                             {"tasks": ["demo_sp"], "models": ["tiny_esm"], "methods": ["lora"]}]
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
    result = subprocess.run([sys.executable, "-m", "seqpeft.cli", "rehearse", "--configfile", "config.yaml", "--steps", "5",
                             "--", "--cores", "2", "--resources", "gpu=1"], cwd=tmp_path, capture_output=True, text=True,
                            timeout=1800, env={**os.environ, "HF_HUB_OFFLINE": "1"})
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    with open(tmp_path / "results" / "rehearsal.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert len(rows) == 4 and {row["outcome"] for row in rows} == {"ok"}, rows
    assert all(float(row["peak_memory_mb"]) > 0 for row in rows)
