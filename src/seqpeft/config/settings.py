"""A job's settings, parsed once: training settings, the fine-tuning job, the tuned values it may
take from its study, and whether a multi-process setup can run (the ``hpo:`` section and search
spaces: ``seqpeft.config.tune_settings``).

Pure Python (no torch, no optuna at import time): the Snakefile's config check and every workflow
script read these classes.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, fields, replace
from pathlib import Path
from typing import Callable

from seqpeft.util.errors import SeqpeftInputError
from seqpeft.config.recipe import SELECT_ON
from seqpeft.config.schema import with_defaults
from seqpeft.core.registry import task_kind as get_task_kind

PRECISIONS = ("auto", "fp32", "bf16")
MODES = ("ddp", "fsdp")  # how several processes of one job share the model (training.distributed)
TUNED_KEYS = ("learning_rate", "batch_size")  # what a study chooses; the configured values do not matter to it


@dataclass
class TrainingConfig:
    """Optimisation settings shared by every job (a method entry may override any of them).

    No defaults here: every field's default is in the config schema's ``training`` section
    (``seqpeft.config.schema``), which ``from_dict`` fills in where the settings lack a key.
    """

    epochs: int
    batch_size: int
    eval_batch_size: int
    learning_rate: float
    weight_decay: float
    warmup_ratio: float
    max_grad_norm: float
    patience: int
    evals_per_epoch: int
    seed: int
    device: str
    max_train_samples: int | None
    bucket_size: int  # batches per length-sorted bucket: large enough for tight padding, small enough to mix
    checkpoint_minutes: float  # besides every evaluation; SIGTERM also saves one
    hpo: bool | str  # learning_rate and batch_size from the tuning study's best_params.json (a space name, or true)
    processes: int  # data-parallel CPU processes of one job; a job with several GPUs runs one per GPU instead
    distributed: str  # how several processes share the model: ddp (replicas) or fsdp (sharded, large decoders)
    precision: str  # forward passes in bf16 autocast (bf16), float32 (fp32), or bf16 on GPUs that have it (auto)
    compile: bool  # torch.compile the classifier: a one-off compile (seconds to minutes) for faster steps
    deterministic: bool  # deterministic GPU kernels: identical reruns and resumes on one GPU model, some speed lost
    optimizer: str  # any torch.optim class (seqpeft.config.recipe); PEFT-SP: Adamax
    optimizer_args: dict  # further arguments of that class (betas, eps, ...)
    scheduler: str  # linear decay after warm-up, or constant (PEFT-SP: no scheduler)
    select_on: str  # model selection and early stopping on dev MCC (or the objective's score), or dev loss

    def __post_init__(self) -> None:
        if self.distributed not in MODES:
            raise SeqpeftInputError(None, f"training.distributed {self.distributed!r} is unknown.", fix=f"use one of {MODES}.")
        if int(self.processes) < 1:
            raise SeqpeftInputError(None, f"training.processes is {self.processes}.", fix="use 1 or more.")
        if self.precision not in PRECISIONS:
            raise SeqpeftInputError(None, f"training.precision {self.precision!r} is unknown.", fix=f"use one of {PRECISIONS}.")
        if self.select_on not in SELECT_ON:
            raise SeqpeftInputError(None, f"training.select_on {self.select_on!r} is unknown.", fix=f"use one of {SELECT_ON}.")

    @classmethod
    def from_dict(cls, values: dict) -> "TrainingConfig":
        """A job's ``training`` settings (``seqpeft.config.jobs.training_for``), the schema's defaults under
        the keys they lack: the ``library_default`` ones in a workflow job, any of them elsewhere."""
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise SeqpeftInputError(None, f"unknown training settings {unknown}.", fix=f"use only {sorted(known)}.")
        return cls(**with_defaults(values, "training"))


@dataclass
class FinetuneJob:
    task: str
    model: str
    method: str
    partition: str
    task_spec: dict
    model_spec: dict
    method_spec: dict
    training: dict
    cache_path: Path
    model_dir: Path
    out_dir: Path
    threads: int = 1  # CPU threads of the whole job, shared by its processes
    best_params: Path | None = None  # the tune rule's best_params.json, used when training.hpo is true
    gpus: int = 0  # GPUs of the job (resources.sizes.<size>.gpu); more than one trains data-parallel

    PATHS = ("cache_path", "model_dir", "out_dir", "best_params")
    # Task settings blocks a method variant may override for its own runs (PEFT-SP's as-published
    # variants run the region CRF with soft constraints, their _fixed twins with hard ones).
    METHOD_OVERRIDES = ("signal_peptide",)

    def __post_init__(self):
        for block in self.METHOD_OVERRIDES:
            if self.method_spec.get(block):
                self.task_spec = {**self.task_spec, block: {**(self.task_spec.get(block) or {}), **self.method_spec[block]}}

    @property
    def dsp(self) -> dict | None:
        """Domain-shift prompting settings of a DSP variant (``seqpeft.config.jobs.finetune_method_params``)."""
        return self.method_spec.get("dsp")

    def to_dict(self) -> dict:
        """JSON-ready, with absolute paths (the worker processes of a multi-process job read it)."""
        values = asdict(self)
        values.update({name: str(Path(values[name]).resolve()) for name in self.PATHS if values[name] is not None})
        return values

    @classmethod
    def from_dict(cls, values: dict) -> "FinetuneJob":
        return cls(**{**values, **{name: Path(values[name]) for name in cls.PATHS if values.get(name) is not None}})


def seed_for(training: TrainingConfig, partition: str) -> int:
    # A GUE partition is a replicate: its number shifts the seed. A fold keeps the base seed.
    return training.seed + (int(partition) if partition.isdigit() else 0)


def apply_tuning(job: FinetuneJob, say: Callable = print) -> tuple[FinetuneJob, dict | None]:
    """The job with the tuned learning rate and batch size when ``training.hpo`` is on.

    They replace the configured values in ``job.training`` itself, so the checkpoint key, the
    schedule and ``metrics.json`` all see the values that were really used.
    """
    if not job.training.get("hpo"):
        return job, None
    if job.best_params is None:
        raise SeqpeftInputError(None, f"training.hpo is true for {job.task}/{job.model}/{job.method} but the job "
                                "was given no best_params.json.",
                                fix="run it through the workflow (the tune rule writes best_params.json), "
                                    "or set training.hpo: false.")
    tuned = read_best_params(job.best_params)
    training = {**job.training, **tuned["params"]}
    say(f"[seqpeft] tuned settings from {job.best_params}: " +
        ", ".join(f"{key} {value}" for key, value in tuned["params"].items()))
    record = {**tuned["params"], "best_dev": tuned["best_value"], "trials_complete": tuned["trials"]["complete"],
              "trials_pruned": tuned["trials"]["pruned"], "best_params": str(job.best_params)}
    return replace(job, training=training), record


# ---- several processes per job ----


def world_size(processes: int, gpus: int, device: str = "auto") -> int:
    """How many ranks a job runs: its GPUs when it has several, else ``training.processes``."""
    if processes > 1 and gpus > 0:
        raise SeqpeftInputError(None, f"training.processes is {processes} but the job has {gpus} GPU(s): "
                                "processes is for CPU jobs, GPU jobs run one process per GPU.",
                                fix="set training.processes: 1 (resources.sizes.<size>.gpu sets the GPU count), "
                                "or give the model size gpu: 0.")
    if processes > 1 and device == "cuda":
        raise SeqpeftInputError(None, f"training.processes is {processes} with training.device 'cuda': "
                                "several processes of one job train on CPU.",
                                fix="set training.device: auto or cpu, or ask for GPUs with resources.sizes.<size>.gpu.")
    return gpus if gpus > 1 else processes


def sharding_conflict(method, task_kind: str) -> str | None:
    """Why a method or task cannot train with sharded parameters (FSDP), or None."""
    if method.after_optimizer_step is not None or method.extra_loss is not None or method.save_state is not None:
        return f"method {method.name!r} reads and edits whole parameters between steps (rank budget, regulariser)"
    if method.load_kwargs is not None:
        return f"method {method.name!r} loads a quantized backbone"
    return get_task_kind(task_kind).sharding_conflict


def setup_problem(world: int, batch_size: int, mode: str, method, task_kind: str) -> tuple[str, str, str] | None:
    """(training setting, problem, fix) when a job of ``world`` processes cannot run as configured."""
    if world <= 1:
        return None
    if batch_size < world:
        return ("batch_size", f"batch_size {batch_size} is smaller than the job's {world} processes, so some would "
                "only idle in every step.", f"set training.batch_size to {world} or more (it is the global batch).")
    if mode == "fsdp" and (conflict := sharding_conflict(method, task_kind)):
        return ("distributed", f"'fsdp' shards parameters across the {world} processes, but {conflict}.",
                "use training.distributed: ddp (the default) for this method or task.")
    return None


# ---- the tuned values a run trains with (seqpeft.training.tune writes them) ----


def read_best_params(path: Path) -> dict:
    """A ``best_params.json``, checked: the learning rate and batch size a fine-tuning job will use."""
    path = Path(path)
    try:
        data = json.loads(path.read_text())
        learning_rate = data["params"]["learning_rate"]
        batch_size = data["params"]["batch_size"]
    except (OSError, ValueError, KeyError, TypeError) as error:
        raise SeqpeftInputError(path, f"is not a readable best_params.json ({type(error).__name__}: {error}).",
                                fix="rerun the tune rule for this run.") from error
    if isinstance(learning_rate, bool) or not isinstance(learning_rate, (int, float)) or not learning_rate > 0:
        raise SeqpeftInputError(path, f"params.learning_rate must be a positive number, got {learning_rate!r}.")
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise SeqpeftInputError(path, f"params.batch_size must be a positive integer, got {batch_size!r}.")
    return data
