"""GPU paths held on a CPU machine (issue #28): what a first cluster run would hit, checked with a
mocked ``torch.cuda`` (availability, compute capability, RNG), fake-tensor "cuda" parameters, and
the real code paths on the CPU."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from seqpeft.training.assemble import require_cuda, resolve_device, resolve_precision, runs_on
from seqpeft.util.errors import SeqpeftInputError
from helpers import demo_config  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]

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
    assert "gpu: 0 for the model's size" in message  # the fix names the way to train on the CPU on purpose
    assert resolve_device("cpu", gpus=1).type == "cpu"  # explicitly asked for
    assert resolve_device("auto", gpus=0).type == "cpu"


def test_gpu_job_through_run_finetune_fails_before_training(tmp_path, tiny_model_dir):
    from helpers import finetune_job
    from seqpeft.training.launch import run_finetune

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


# ---- 5: the single-process best state and checkpoints live on the host, not the GPU ----

def test_single_process_trainable_state_is_copied_to_the_host():
    from torch._subclasses.fake_tensor import FakeTensorMode

    from seqpeft.training.distributed import SINGLE

    with FakeTensorMode():  # "cuda" tensors without a GPU: shapes and devices only
        model = torch.nn.Linear(8, 4, device="meta")
        model.weight = torch.nn.Parameter(torch.empty(4, 8, device="cuda"))
        model.bias = torch.nn.Parameter(torch.empty(4, device="cuda"), requires_grad=False)
        state = SINGLE.trainable_state(model)
    assert list(state) == ["weight"]
    assert state["weight"].device.type == "cpu"  # a GPU copy would count in cuda_max_memory_allocated


# ---- 11: resume restores the GPU's generator too; training.deterministic ----

def test_torch_rng_states_round_trip_cpu_and_cuda(monkeypatch):
    from seqpeft.training.checkpoint import restore_torch_rng_states, torch_rng_states

    cpu = torch.device("cpu")
    saved = torch_rng_states(torch, cpu)
    first = torch.rand(3)
    torch.rand(5)
    restore_torch_rng_states(torch, cpu, saved)
    assert torch.equal(torch.rand(3), first)

    generator = {"state": torch.tensor([1, 2, 3], dtype=torch.uint8)}  # a CUDA generator, mocked
    monkeypatch.setattr(torch.cuda, "get_rng_state", lambda device="cuda": generator["state"].clone())
    monkeypatch.setattr(torch.cuda, "set_rng_state", lambda state, device="cuda": generator.update(state=state.clone()))
    cuda = torch.device("cuda", 0)
    saved = torch_rng_states(torch, cuda)
    generator["state"] = torch.tensor([9, 9, 9], dtype=torch.uint8)  # training went on after the checkpoint
    restore_torch_rng_states(torch, cuda, saved)
    assert generator["state"].tolist() == [1, 2, 3]
    restore_torch_rng_states(torch, cuda, torch.get_rng_state())  # a checkpoint from before: the CPU's only


def test_deterministic_setting_switches_kernels_and_cublas(monkeypatch):
    from seqpeft.training.checkpoint import CUBLAS_WORKSPACE, apply_determinism
    from seqpeft.config.settings import TrainingConfig

    from helpers import training_settings

    monkeypatch.delenv("CUBLAS_WORKSPACE_CONFIG", raising=False)
    assert TrainingConfig.from_dict(training_settings()).deterministic is False
    try:
        apply_determinism(torch, TrainingConfig.from_dict(training_settings({"deterministic": True})).deterministic)
        assert torch.are_deterministic_algorithms_enabled()
        import os

        assert os.environ["CUBLAS_WORKSPACE_CONFIG"] == CUBLAS_WORKSPACE
        apply_determinism(torch, False)  # the next job in this process runs at full speed
        assert not torch.are_deterministic_algorithms_enabled()
    finally:
        torch.use_deterministic_algorithms(False)


# ---- 4, 8, 9: what the jobs ask the cluster for ----

class _Resources(dict):
    """A dry run's ``resources:`` line as the SLURM plugin reads a job's resources."""

    def __getattr__(self, name):
        return self[name]


def _resource_lines(dry_run: str, rule: str) -> list[_Resources]:
    jobs = []
    for block in dry_run.split("\nrule ")[1:]:
        if block.startswith(f"{rule}:"):
            line = next(line for line in block.splitlines() if line.startswith("    resources: "))
            values = dict(item.split("=", 1) for item in line[len("    resources: "):].split(", "))
            jobs.append(_Resources({key: int(value) if value.isdigit() else value for key, value in values.items()}))
    return jobs


def _sbatch_line(resources: _Resources) -> str:
    """The sbatch command line snakemake-executor-plugin-slurm builds for a job with these resources."""
    from types import SimpleNamespace

    from snakemake_executor_plugin_slurm.submit_string import get_submit_command
    from snakemake_executor_plugin_slurm.utils import set_gres_string

    job = SimpleNamespace(resources=resources, threads=4)
    params = {"run_uuid": "test", "slurm_logfile": "log", "comment_str": "job", "account": "", "partition": "-p gpu",
              "workdir": None}
    return get_submit_command(job, params) + set_gres_string(job)


def test_slurm_gpu_jobs_stay_on_one_node_and_trials_ask_for_one_gpu(tmp_path):
    import yaml

    from helpers import run

    config = demo_config()
    config["results"] = str(tmp_path / "results")
    config["training"]["device"] = "auto"
    config["resources"] = {"sizes": {"tiny": {"gpu": 2, "mem_mb": 1000, "runtime": 30}}}  # two GPUs per fine-tuning job
    config_path = tmp_path / "config.yaml"
    config_path.write_text(yaml.safe_dump(config))
    code, out = run("-n", "--profile", ROOT / "profiles" / "slurm", "--quiet", "host", "--configfile", config_path,
                    "--until", "tune_trials", "finetune")
    assert code == 0, out[-3000:]
    finetune, trials = _resource_lines(out, "finetune"), _resource_lines(out, "tune_trials")
    assert finetune and trials
    for resources in finetune:
        line = _sbatch_line(resources)
        assert " --nodes=1" in line and line.endswith(" --gpus=2"), line
    for resources in trials:  # a trial trains in one process on one GPU (seqpeft.training.launch.run_finetune)
        line = _sbatch_line(resources)
        assert " --nodes=1" in line and line.endswith(" --gpus=1"), line


def test_local_profile_runs_one_gpu_job_at_a_time():
    import yaml

    # nothing sets CUDA_VISIBLE_DEVICES per local job: two at once would share GPU 0
    profile = yaml.safe_load((ROOT / "profiles" / "local" / "config.yaml").read_text())
    assert "gpu=1" in profile["resources"]


# ---- 10 and 3: QLoRA counts its 4-bit weights whole; its predictor keeps model and inputs on one device ----

def test_qlora_counts_parameters_as_the_unquantized_model(tiny_model_dir):
    from helpers import QLORA_TINY
    from seqpeft.training.assemble import build_model
    from seqpeft.models.classifier import count_parameters

    model_dir = tiny_model_dir("llama", **QLORA_TINY)
    counts = {method: count_parameters(build_model(model_dir, {}, method, {"r": 4}, 2, False, total_steps=10,
                                                   model_name="llama")[0]) for method in ("lora", "qlora")}
    assert counts["qlora"] == counts["lora"]  # the same LoRA, the same backbone; only the storage differs


def test_qlora_predictor_loads_on_its_own_device_where_cuda_is_visible(tiny_model_dir, tmp_path, monkeypatch):
    from helpers import QLORA_TINY, assert_reloaded_run_predicts_its_test_accuracy, finetune_job, motif_task
    from seqpeft.methods import qlora
    from seqpeft.training.launch import run_finetune

    model_dir = tiny_model_dir("llama", **QLORA_TINY)
    motif_task(tmp_path, model_dir)
    metrics = run_finetune(finetune_job(tmp_path / "cache.npz", model_dir, tmp_path / "run", method="qlora",
                                        method_spec={"r": 4}, training={"epochs": 1, "batch_size": 32}))
    # training on a GPU node: qlora loads onto the current CUDA device; the predictor feeds CPU tensors
    monkeypatch.setattr(qlora, "_device", lambda: "cuda:0")
    assert_reloaded_run_predicts_its_test_accuracy(tmp_path / "run", tmp_path / "data" / "test.csv", metrics, tmp_path)


# ---- 6: FSDP shards before anything reaches the GPU, and the peak counter starts after sharding ----

def test_fsdp_shards_a_model_still_on_the_host_then_resets_the_peak(tiny_model_dir, tmp_path, monkeypatch):
    import seqpeft.training.distributed as distributed
    import seqpeft.training.loop as loop
    from helpers import finetune_job, motif_task
    from seqpeft.training.distributed import Ranks
    from seqpeft.config.settings import TrainingConfig

    model_dir = tiny_model_dir("llama")
    motif_task(tmp_path, model_dir)
    job = finetune_job(tmp_path / "cache.npz", model_dir, tmp_path / "run", training={"distributed": "fsdp"})
    training = TrainingConfig.from_dict(job.training)
    run = loop.prepare_data(job, training, distributed.SINGLE, print, None, False)
    # rank 0 of a two-GPU FSDP job: the GPU and the collectives mocked, the model building real
    run.ranks = Ranks(rank=0, world_size=2, mode="fsdp", device=torch.device("cuda", 0))
    run.device = run.ranks.device
    events = []
    monkeypatch.setattr(distributed, "_shard", lambda model, device, world: events.append(
        ("shard", {p.device.type for p in model.parameters()}, device, world)))
    monkeypatch.setattr(torch.cuda, "reset_peak_memory_stats", lambda device=None: events.append(("reset", device)))
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=None: (9, 0))
    loop.prepare_model(run)  # a whole-model .to("cuda") fails here: this torch has no CUDA
    assert events == [("shard", {"cpu"}, run.device, 2), ("reset", run.device)]


def test_make_gpu_check_says_in_one_line_that_it_needs_a_gpu():
    import shutil
    import subprocess
    import sys

    if torch.cuda.is_available():
        pytest.skip("a GPU is visible: make gpu-check would run the GPU tests")
    if shutil.which("make") is None:
        pytest.skip("no make here")
    done = subprocess.run(["make", "-s", "gpu-check", f"BIN={Path(sys.executable).parent}"], cwd=ROOT, capture_output=True,
                          text=True, timeout=120)
    assert done.returncode == 0 and done.stdout.strip().splitlines() == [
        f"make gpu-check needs a CUDA GPU that {Path(sys.executable).parent}/python's torch can use: none here, nothing run"]
