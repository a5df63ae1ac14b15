"""What a job trains with, put together: the model (backbone + method + head), the device, the
precision and compilation, and the checks that the tokenized cache fits the job."""

from __future__ import annotations

import functools
import os
import resource
from pathlib import Path
from typing import Callable

import numpy as np

from seqpeft.methods.dsp import DspSettings
from seqpeft.util.errors import SeqpeftInputError
from seqpeft.models.hf_head import HEAD_ATTRIBUTES, check_applicable, check_prefix_support, uses_transformers_head
from seqpeft.methods.registry import MethodContext, resolve_method
from seqpeft.models.classifier import make_classifier
from seqpeft.models.families import load_backbone
from seqpeft.config.recipe import freeze_head
from seqpeft.config.schema import ENTRY, with_defaults
from seqpeft.data.tokenize import TokenizedTask


def resolve_device(name: str, gpus: int = 0):
    """The training device. A job that asked for a GPU (``gpus`` > 0) must get one: with
    ``device: auto`` it fails at once, saying why no GPU is usable, rather than train on the node's
    CPUs until its time limit (``device: cpu`` trains on the CPU whatever the job asked for)."""
    import torch

    if name == "cpu":
        return torch.device("cpu")
    if name == "cuda" or gpus > 0:
        why = "training.device is 'cuda'" if name == "cuda" else f"the job asks for {gpus} GPU(s) (resources.sizes)"
        require_cuda(torch, why)
        return torch.device("cuda")
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


# The CUDA 13 builds of requirements/gpu.lock run on compute capability 7.5 (Turing) and newer.
OLDER_GPU_FIX = ("run on a GPU of compute capability >= 7.5 with a driver for this torch's CUDA, or install a torch "
                 "built for an older CUDA (README: GPU install); to train on the CPU on purpose, set gpu: 0 for the "
                 "model's size (resources.sizes) and training.device: cpu.")


def require_cuda(torch, why: str) -> None:
    """Fail, naming what was found (torch's CUDA, the driver, the GPU's compute capability), unless
    this torch can run kernels on the visible GPU."""
    if not torch.cuda.is_available():
        build = f"torch {torch.__version__} built for CUDA {torch.version.cuda}" if torch.version.cuda else \
            f"torch {torch.__version__} is a CPU-only build"
        raise SeqpeftInputError(None, f"{why} but no CUDA device is usable: {build}; NVIDIA driver: {nvidia_driver()}; "
                                f"CUDA_VISIBLE_DEVICES={os.environ.get('CUDA_VISIBLE_DEVICES', '(unset)')}.",
                                fix=OLDER_GPU_FIX)
    index = torch.cuda.current_device()
    capability = torch.cuda.get_device_capability(index)
    archs = torch.cuda.get_arch_list()
    if archs and not runs_on(capability, archs):
        raise SeqpeftInputError(None, f"{why} but GPU {index} ({torch.cuda.get_device_name(index)}) has compute "
                                f"capability {capability[0]}.{capability[1]}, which torch {torch.__version__} (CUDA "
                                f"{torch.version.cuda}) has no kernels for (built for {' '.join(archs)}).",
                                fix=OLDER_GPU_FIX)


def runs_on(capability: tuple[int, int], archs: list[str]) -> bool:
    """Whether a build for ``archs`` (``sm_XY`` binaries, ``compute_XY`` PTX) runs on a GPU of
    ``capability``: a binary runs on its major version's later minors, PTX on any later GPU."""
    major, minor = capability
    for arch in archs:
        kind, _, number = arch.partition("_")
        arch_major, arch_minor = int(number[:-1]), int(number[-1])
        if kind == "sm" and arch_major == major and arch_minor <= minor:
            return True
        if kind == "compute" and (arch_major, arch_minor) <= (major, minor):
            return True
    return False


def nvidia_driver() -> str:
    """The loaded NVIDIA kernel driver's version line, or that there is none."""
    try:
        return Path("/proc/driver/nvidia/version").read_text().splitlines()[0].strip()
    except (OSError, IndexError):
        return "none loaded (no /proc/driver/nvidia/version)"


def resolve_precision(torch, precision: str, device) -> tuple[str, str]:
    """``fp32`` or ``bf16``, and why. ``auto`` means bf16 on a CUDA device with native bf16 units
    (compute capability >= 8.0: the speed and memory of half precision, with float32's exponent
    range so no loss scaling is needed), else fp32: CPUs without bf16 units, and GPUs such as the T4
    or V100 that only emulate bf16 (``torch.cuda.is_bf16_supported()`` counts emulation), run it
    slower than float32."""
    if precision != "auto":
        return precision, "set in training.precision"
    if device.type != "cuda":
        return "fp32", f"auto: {device.type} device"
    major, minor = torch.cuda.get_device_capability(device)
    if major >= 8:
        return "bf16", f"auto: native bf16 on compute capability {major}.{minor}"
    return "fp32", f"auto: compute capability {major}.{minor} has no native bf16 (emulated only)"


def apply_precision(torch, model, precision: str, device) -> None:
    """Run ``model``'s forward pass under bf16 autocast and hand back float32 logits.

    Weights, gradients and optimizer state stay float32; the backward pass runs outside autocast
    as PyTorch recommends. Wrapping the instance's forward covers every classifier of the method
    registry and keeps working under DDP/FSDP, which call the module.
    """
    if precision != "bf16":
        return
    forward = model.forward

    @functools.wraps(forward)
    def autocast_forward(*args, **kwargs):
        with torch.autocast(device_type=device.type, dtype=torch.bfloat16):
            return forward(*args, **kwargs).float()

    model.forward = autocast_forward


# Peak memory means one thing per device, named in metrics.json's memory_measure.
CPU_PEAK_SINCE_RESET = "cpu_peak_rss_since_model_load"
CPU_PEAK_LIFETIME = "cpu_peak_rss_process_lifetime"
CUDA_PEAK = "cuda_max_memory_allocated"


def reset_cpu_peak() -> str:
    """Reset the kernel's peak-RSS counter of this process (Linux: ``5`` to /proc/self/clear_refs),
    so that the peak read later is this run's alone; the name of the measurement that results."""
    try:
        with open("/proc/self/clear_refs", "w") as handle:
            handle.write("5")
        return CPU_PEAK_SINCE_RESET
    except OSError:
        return CPU_PEAK_LIFETIME


def cpu_peak_mb() -> float:
    """The process's peak resident memory (VmHWM; ru_maxrss where /proc is missing), MB."""
    try:
        with open("/proc/self/status") as handle:
            for line in handle:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def check_dsp_cache(cache: TokenizedTask, dsp: dict | None, cache_path: Path, model: str) -> None:
    """A DSP variant must train on a cache made with its exact DSP settings, any other run on a plain one."""
    cached = cache.meta.get("dsp")
    if dsp is None and cached is None:
        return
    if dsp is None:
        raise SeqpeftInputError(cache_path, "holds domain-shift-prompted inputs but the method variant has no dsp setting.",
                                fix="train on the task's plain cache ({task}/<tokenizer>.npz) or add dsp to the method.")
    if cached is None:
        raise SeqpeftInputError(cache_path, "was tokenized without the DSP template this method variant trains with.",
                                fix=f"use the task's DSP cache ({{task}}/{model}.dsp-<encoding>.npz from the tokenize_dsp rule).")
    wanted = DspSettings.from_dict(dsp).to_dict()
    made = {key: cached.get(key) for key in wanted}
    if made != wanted:
        differ = sorted(key for key in wanted if made[key] != wanted[key])
        raise SeqpeftInputError(cache_path, f"was tokenized with other DSP settings ({', '.join(differ)}) than this job's.",
                                fix="delete the cache and rerun the tokenize_dsp rule.")


def build_model(job_model_dir: Path, model_spec: dict, method_name: str, method_spec: dict, num_labels: int,
                per_residue: bool, total_steps: int, model_name: str = ""):
    """Backbone + method + head; returns (classifier, method, method_args, loaded)."""
    reuse_head = bool(model_spec.get("reuse_pretrained_head", False))
    method, args = resolve_method(method_name, method_spec)
    transformers_head = uses_transformers_head(model_spec)
    if transformers_head:
        check_applicable(model_name, job_model_dir, model_spec, method_name, method_spec, method, per_residue)
    extra = method.load_kwargs(args) if method.load_kwargs is not None else None
    loaded = load_backbone(job_model_dir, model_spec, num_labels=num_labels if reuse_head or transformers_head else None,
                           extra_kwargs=extra)
    if transformers_head:
        check_prefix_support(loaded.backbone, model_name, method_name, method_spec, method)
    loaded.backbone = method.apply(loaded.backbone, args, method_context(loaded, total_steps, model_name))
    model = make_classifier(loaded, num_labels, pooling=model_spec.get("pooling"), per_residue=per_residue,
                            dropout=float(model_spec.get("head_dropout", 0.1)))
    if not with_defaults(method_spec, "methods", ENTRY)["train_head"]:  # the Galaxy tutorial's frozen random head (seqpeft.config.recipe)
        freeze_head(model)
    return model, method, args, loaded


def method_context(loaded, total_steps: int, model_name: str) -> MethodContext:
    """What a method needs beyond its arguments; under ``head: transformers`` peft wraps the
    ``*ForSequenceClassification`` model as SEQ_CLS and saves its head modules with the adapter."""
    if not loaded.head_modules:
        return MethodContext(loaded.family, total_steps, model_name)
    extra = tuple(name for name in loaded.head_modules if name not in HEAD_ATTRIBUTES)  # peft adds these itself
    return MethodContext(loaded.family, total_steps, model_name, task_type="SEQ_CLS", modules_to_save=extra)


def compile_model(model, ranks) -> None:
    """``torch.compile`` the classifier in place, with dynamic shapes.

    In place (``Module.compile``) so that parameter names, checkpoints, ``save_pretrained`` and
    the DDP wrapper see the same module. Dynamic shapes because length-bucketed batches change
    width from step to step: one graph serves every width instead of one compile per width.
    Training and evaluation each compile once (autograd and inference graphs). Random ops
    (dropout) keep eager PyTorch's generator, so that a seeded run draws the same dropout masks
    compiled or not: compiling changes the speed of a run, not its result.
    """
    import torch._inductor.config

    if ranks.shards_parameters:
        raise SeqpeftInputError(None, "training.compile is not supported with training.distributed: fsdp.",
                                fix="set training.compile: false, or use distributed: ddp.")
    torch._inductor.config.fallback_random = True
    model.compile(dynamic=True)


def count_truncated(job, cache: TokenizedTask, splits: dict, max_length: int, say: Callable) -> int:
    """Sequences longer than the model's max_length: refused (``on_too_long: refuse``) or counted."""
    truncated = int(sum((s.data.lengths > max_length).sum() for s in splits.values()))
    if truncated and with_defaults(job.model_spec, "models", ENTRY)["on_too_long"] == "refuse":
        name, split = next((n, s) for n, s in splits.items() if (s.data.lengths > max_length).any())
        first = int(np.argmax(split.data.lengths > max_length))
        raise SeqpeftInputError(cache.meta.get("data", job.cache_path), f"{truncated} sequences are longer than "
                                f"max_length={max_length} tokens of model {job.model!r}; the first is sequence {first + 1} "
                                f"of the {name} split ({int(split.data.lengths[first])} tokens).",
                                fix=f"set models.{job.model}.on_too_long: truncate, or raise max_length.")
    if job.dsp is not None:
        # DSP inputs were shortened at tokenization (sequence cut, template whole): they all fit.
        truncated = int(sum(cache.meta.get("dsp_truncated", {}).values()))
        if truncated:
            say(f"[seqpeft] {truncated} sequences lost nucleotides to fit max_length={max_length} with the DSP template")
    elif truncated:
        say(f"[seqpeft] {truncated} sequences are longer than max_length={max_length} tokens and are truncated")
    return truncated
