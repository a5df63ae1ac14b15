"""Resumable training: the loop's state, atomic checkpoints keyed by the job's settings, and SIGTERM
turned into a flag the loop checks between steps."""

from __future__ import annotations

import copy
import hashlib
import json
import math
import os
import shutil
import signal
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from seqpeft.util.atomic import atomic_file
from seqpeft.config.settings import FinetuneJob


class Preempted(RuntimeError):
    """Raised after a SIGTERM: the checkpoint is saved and the job exits non-zero to be retried."""


@dataclass
class LoopState:
    """Everything the training loop needs to continue exactly where it stopped."""

    epoch: int = 0
    batch_in_epoch: int = 0
    epoch_rng_state: dict | None = None
    step: int = 0
    samples: int = 0
    train_seconds: float = 0.0
    running_loss: float = 0.0
    running_count: int = 0
    since_best: int = 0
    best: dict = field(default_factory=lambda: {"mcc": -math.inf})
    history: list = field(default_factory=list)
    micro_batch_size: int = 0
    oom_events: list = field(default_factory=list)
    finished: bool = False


class Checkpointer:
    """Atomic checkpoints in the run directory, keyed by the job's settings.

    A checkpoint from a run with other settings (a changed config value) is discarded, never
    resumed; a finished run removes its checkpoint.
    """

    def __init__(self, run_dir: Path, job_key: str, every_seconds: float, writer: bool = True):
        self.path = Path(run_dir) / "checkpoint" / "state.pt"
        self.job_key = job_key
        self.every_seconds = every_seconds
        self.writer = writer  # only rank 0 of a multi-process job saves, discards and clears
        self.last_save = time.monotonic()

    def load(self, mmap: bool = False):
        """The saved payload, or None; ``mmap`` lets the ranks of one job share the file's pages."""
        import torch

        if not self.path.is_file():
            return None
        payload = torch.load(self.path, map_location="cpu", weights_only=False, mmap=mmap)
        if payload.get("job_key") != self.job_key:
            if self.writer:
                print(f"[seqpeft] discarding checkpoint {self.path}: it belongs to other settings")
                self.clear()
            return None
        return payload

    def due(self) -> bool:
        return time.monotonic() - self.last_save >= self.every_seconds

    def save(self, payload: dict) -> None:
        import torch

        if not self.writer:
            return
        with atomic_file(self.path) as tmp:
            torch.save({**payload, "job_key": self.job_key}, tmp)
        self.last_save = time.monotonic()

    def clear(self) -> None:
        if self.writer:
            shutil.rmtree(self.path.parent, ignore_errors=True)


def job_key(job: FinetuneJob, world_size: int = 1) -> str:
    settings = {"task": job.task, "model": job.model, "method": job.method, "partition": str(job.partition),
                "task_spec": job.task_spec, "model_spec": job.model_spec, "method_spec": job.method_spec,
                "training": job.training}
    if world_size > 1:  # per-rank RNG states and sharded optimizer state fit only the same world size
        settings["world_size"] = world_size
    return hashlib.sha256(json.dumps(settings, sort_keys=True, default=str).encode()).hexdigest()


class TermFlag:
    """Turns SIGTERM (SLURM preemption, scancel, time limit) into a flag checked between steps."""

    def __init__(self):
        self.raised = False
        self.previous = None

    def __enter__(self):
        if threading.current_thread() is threading.main_thread():
            self.previous = signal.signal(signal.SIGTERM, self._handle)
        return self

    def _handle(self, signum, frame):
        self.raised = True

    def __exit__(self, *exc):
        if self.previous is not None:
            signal.signal(signal.SIGTERM, self.previous)
        return False


class OomRecord:
    """A job that ran out of GPU memory at micro-batch 1, remembered in its run directory so that
    Snakemake's retries (more host memory and time, which cannot help) fail at once instead of
    loading the model and failing again. Keyed by the job's settings, like a checkpoint: changed
    settings (a smaller max_length, QLoRA) or a GPU with more memory than the failed one try again."""

    def __init__(self, run_dir: Path, job_key: str):
        self.path = Path(run_dir) / "out_of_gpu_memory.json"
        self.job_key = job_key

    def save(self, message: str, gpu: str, memory_bytes: int) -> None:
        with atomic_file(self.path) as tmp:
            tmp.write_text(json.dumps({"job_key": self.job_key, "gpu": gpu, "memory_bytes": memory_bytes,
                                       "error": message}))

    def refuse_retry(self, memory_bytes: int) -> str | None:
        """Why this attempt cannot help (the same settings on a GPU no larger), or None; an outdated record goes."""
        if not self.path.is_file():
            return None
        record = json.loads(self.path.read_text())
        if record["job_key"] != self.job_key or memory_bytes > record["memory_bytes"]:
            self.clear()
            return None
        return (f"an earlier attempt of this job with the same settings ran out of memory at micro-batch 1 on "
                f"{record['gpu']} ({record['memory_bytes'] / 2**30:.1f} GiB); more host memory or time cannot help "
                f"({self.path}): {record['error']}")

    def clear(self) -> None:
        self.path.unlink(missing_ok=True)


def rng_state(rng: np.random.Generator) -> dict:
    return copy.deepcopy(rng.bit_generator.state)


def torch_rng_states(torch, device) -> dict:
    """This process's torch generators: the CPU's and, on a GPU, the device's (dropout on a GPU
    draws from the CUDA generator, which would otherwise restart from the seed after a resume)."""
    return {"cpu": torch.get_rng_state(), "cuda": torch.cuda.get_rng_state(device) if device.type == "cuda" else None}


def restore_torch_rng_states(torch, device, states) -> None:
    """Undo ``torch_rng_states``; a checkpoint of before the CUDA state was saved holds the CPU's only."""
    if not isinstance(states, dict):
        states = {"cpu": states, "cuda": None}
    torch.set_rng_state(states["cpu"])
    if device.type == "cuda" and states["cuda"] is not None:
        torch.cuda.set_rng_state(states["cuda"], device)


CUBLAS_WORKSPACE = ":4096:8"  # what cuBLAS needs for deterministic results (CUDA docs, "Results reproducibility")


def apply_determinism(torch, deterministic: bool) -> None:
    """``training.deterministic``: deterministic kernels only (an op that has none fails, naming
    itself), cuBLAS with a fixed workspace, no cuDNN autotuning. Before any CUDA work of the process;
    set either way, so that a job after a deterministic one in the same process runs at full speed."""
    if deterministic:
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", CUBLAS_WORKSPACE)
    torch.use_deterministic_algorithms(bool(deterministic))
    torch.backends.cudnn.benchmark = False
