"""What one run reports in ``metrics.json``: test and best dev metrics, its costs (trainable
parameters, peak memory and what measured it, time) and the settings that reached the model."""

from __future__ import annotations

import math
from dataclasses import asdict

from seqpeft.training.assemble import CUDA_PEAK, cpu_peak_mb
from seqpeft.models.hf_head import head_mode
from seqpeft.config.recipe import adapter_settings, unchanged_from_init
from seqpeft.config.schema import ENTRY, with_defaults


def dev_best(run) -> dict:
    """The best dev evaluation's metrics, without its step and epoch."""
    return {key: value for key, value in run.state.best.items() if key not in ("step", "epoch")}


def run_metrics(run, test: dict, tuned: dict | None) -> dict:
    """``metrics.json``: test and best dev metrics, costs (parameters, memory, time) and settings."""
    import torch

    job, ranks, state, training, device = run.job, run.ranks, run.state, run.training, run.device
    if device.type == "cuda":
        peak_mb, memory_device, memory_measure = torch.cuda.max_memory_allocated(device) / 2**20, "cuda", CUDA_PEAK
    else:  # the whole process's peak from model load on (interpreter and libraries included)
        peak_mb, memory_device, memory_measure = cpu_peak_mb(), "cpu", run.memory_measure
    peak_mb = max(ranks.gather(peak_mb))  # the largest process's: what one GPU (or process) must hold
    best = state.best
    metrics = {
        "task": job.task, "model": job.model, "method": job.method, "partition": str(job.partition),
        "task_kind": run.cache.kind, "score": run.kind.score, "test": test, "dev": dev_best(run),
        "trainable_params": run.trainable, "total_params": run.total,
        "peak_memory_mb": round(peak_mb, 2), "memory_device": memory_device, "memory_measure": memory_measure,
        "train_seconds": round(state.train_seconds, 3),
        "train_samples_per_second": round(state.samples / max(state.train_seconds, 1e-9), 2),
        "best_epoch": int(best.get("epoch", 0)), "best_step": int(best.get("step", 0)),
        "epochs_run": math.ceil(state.step / run.steps_per_epoch), "steps": state.step, "seed": run.seed,
        "truncated_sequences": run.truncated, "device": str(device),
        "world_size": ranks.world_size, "distributed": ranks.mode, "precision": run.precision,
        "precision_reason": run.precision_reason,
        # what the checkpoint's weight files held and what the parameters were loaded as (float32)
        "weights_dtype": dict(run.loaded.weights_dtype),
        "micro_batch_size": state.micro_batch_size,
        "gradient_accumulation": math.ceil(training.batch_size / state.micro_batch_size),
        "oom_events": state.oom_events,
        "training": asdict(training), "method_args": run.method_args,
        "remove_top_layers": int(with_defaults(job.model_spec, "models", ENTRY)["remove_top_layers"]),
        # the recipe as it reached the model: input length, head, adapter settings in effect
        "head": head_mode(job.model_spec),
        "max_length": run.max_length, "train_head": bool(with_defaults(job.method_spec, "methods", ENTRY)["train_head"]),
        "unchanged_from_init": unchanged_from_init(run.initial_head, run.core),
        **({"adapter_config": adapter} if (adapter := adapter_settings(run.core.backbone)) else {}),
        **run.kind.settings(job.task_spec),
        **({"hpo": tuned} if tuned is not None else {}),
        **({"quantization": run.loaded.quantization} if run.loaded.quantization else {}),
    }
    if job.dsp is not None:
        metrics["dsp"] = {"encoding": job.dsp["encoding"], "domain": job.dsp["domain"],
                          "template_tokens": run.cache.meta["dsp"]["template_tokens"]}
    return metrics
