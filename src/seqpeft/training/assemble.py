"""What a job trains with, put together: the model (backbone + method + head), the device, the
precision and compilation, and the checks that the tokenized cache fits the job."""

from __future__ import annotations

import functools
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


def resolve_device(name: str):
    import torch

    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise SeqpeftInputError(None, "training.device is 'cuda' but no CUDA device is visible.",
                                fix="run on a GPU node, or set training.device: auto.")
    return torch.device(name)


def resolve_precision(torch, precision: str, device) -> str:
    """``fp32`` or ``bf16``: ``auto`` means bf16 on a CUDA device that supports it (the speed and
    memory of half precision, with float32's exponent range so no loss scaling is needed), else
    fp32 (CPUs without bf16 units run it slower than float32)."""
    if precision != "auto":
        return precision
    return "bf16" if device.type == "cuda" and torch.cuda.is_bf16_supported() else "fp32"


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
