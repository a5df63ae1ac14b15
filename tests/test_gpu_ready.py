"""GPU paths held on a CPU machine (issue #28): what a first cluster run would hit, checked with a
mocked ``torch.cuda`` (availability, compute capability, RNG), fake-tensor "cuda" parameters, and
the real code paths on the CPU."""

from __future__ import annotations

import pytest
import torch

from seqpeft.assemble import require_cuda, resolve_device, resolve_precision, runs_on
from seqpeft.errors import SeqpeftInputError

CUDA13_ARCHS = ["sm_75", "sm_80", "sm_86", "sm_90", "sm_100", "sm_120", "compute_120"]


def _fake_gpu(monkeypatch, capability: tuple[int, int], name: str = "Fake GPU", archs=CUDA13_ARCHS) -> None:
    """torch.cuda as on a node with one GPU of ``capability`` and a torch built for ``archs``."""
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "current_device", lambda: 0)
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=None: capability)
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda device=None: name)
    monkeypatch.setattr(torch.cuda, "get_arch_list", lambda: list(archs))


# ---- 1: a job that asked for a GPU and finds none (or one its torch cannot use) fails at once ----

def test_gpu_job_without_a_usable_gpu_fails_naming_what_it_found(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(SeqpeftInputError) as caught:
        resolve_device("auto", gpus=1)
    message = str(caught.value)
    assert "asks for 1 GPU" in message and "NVIDIA driver" in message and f"torch {torch.__version__}" in message
    assert "training.device: cpu" in message  # the fix names the way to train on the CPU on purpose
    assert resolve_device("cpu", gpus=1).type == "cpu"  # explicitly asked for
    assert resolve_device("auto", gpus=0).type == "cpu"


def test_gpu_job_through_run_finetune_fails_before_training(tmp_path, tiny_model_dir):
    from helpers import finetune_job
    from seqpeft.launch import run_finetune

    if torch.cuda.is_available():
        pytest.skip("a GPU is visible: the job would train on it")
    job = finetune_job(tmp_path / "missing.npz", tiny_model_dir("llama"), tmp_path / "run", gpus=1)
    with pytest.raises(SeqpeftInputError, match="asks for 1 GPU"):
        run_finetune(job)
    assert not (tmp_path / "run" / "metrics.json").exists()


def test_gpu_older_than_the_build_is_refused(monkeypatch):
    _fake_gpu(monkeypatch, (7, 0), name="Tesla V100-SXM2-32GB")
    with pytest.raises(SeqpeftInputError) as caught:
        resolve_device("auto", gpus=1)
    assert "Tesla V100" in str(caught.value) and "capability 7.0" in str(caught.value) and "sm_75" in str(caught.value)
    with pytest.raises(SeqpeftInputError, match="capability 7.0"):
        require_cuda(torch, "training.device is 'cuda'")
    for capability in [(7, 5), (8, 0), (8, 9), (9, 0), (12, 0), (13, 0)]:  # 13.0: the compute_120 PTX
        _fake_gpu(monkeypatch, capability)
        assert resolve_device("cuda").type == "cuda"


def test_arch_compatibility_follows_cuda_rules():
    assert runs_on((8, 6), ["sm_80"]) and not runs_on((9, 0), ["sm_80"]) and not runs_on((7, 5), ["sm_80"])
    assert runs_on((9, 0), ["compute_80"]) and not runs_on((7, 5), ["compute_80"])


# ---- 7: precision auto is bf16 only where the GPU has native bf16, and says why ----

def test_auto_precision_is_bf16_only_on_native_bf16(monkeypatch):
    cuda = torch.device("cuda")
    _fake_gpu(monkeypatch, (7, 5), name="Tesla T4")
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda including_emulation=True: True)  # T4: emulated
    precision, reason = resolve_precision(torch, "auto", cuda)
    assert precision == "fp32" and "7.5" in reason and "emulated" in reason
    _fake_gpu(monkeypatch, (8, 0), name="A100")
    assert resolve_precision(torch, "auto", cuda) == ("bf16", "auto: native bf16 on compute capability 8.0")
    assert resolve_precision(torch, "bf16", torch.device("cpu")) == ("bf16", "set in training.precision")
    assert resolve_precision(torch, "auto", torch.device("cpu"))[0] == "fp32"
