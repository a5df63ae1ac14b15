"""One fine-tuning job: model x method x task x partition, from a tokenized cache to metrics.

A plain PyTorch loop rather than the Hugging Face Trainer, because the benchmark needs what the
Trainer does not do: AdaLoRA's per-step budget update, length-bucketed batches with dynamic
padding, pooling that is right under prompt methods, and per-evaluation history with wall time.
"""

from __future__ import annotations

import copy
import functools
import csv
import io
import json
import math
import os
import resource
import shutil
import time
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path
from typing import Callable

import numpy as np

from seqpeft import progress
from seqpeft.atomic import atomic_directory, atomic_file, write_text_atomic
from seqpeft.errors import SeqpeftInputError
from seqpeft.tokenize import TokenizedSplit, TokenizedTask, load_cache

HISTORY_COLUMNS = ["step", "epoch", "wall_seconds", "train_loss", "dev_loss", "dev_mcc", "dev_accuracy"]


@dataclass
class TrainingConfig:
    """Optimisation settings shared by every job (a method entry may override any of them)."""

    epochs: int = 10
    batch_size: int = 32
    eval_batch_size: int = 128
    learning_rate: float = 5e-4
    weight_decay: float = 0.0
    warmup_ratio: float = 0.06
    max_grad_norm: float = 1.0
    patience: int = 3
    evals_per_epoch: int = 1
    seed: int = 0
    device: str = "auto"
    max_train_samples: int | None = None
    bucket_size: int = 64  # batches per length-sorted bucket: large enough for tight padding, small enough to mix
    checkpoint_minutes: float = 10.0  # besides every evaluation; SIGTERM also saves one
    hpo: bool = False  # learning_rate and batch_size come from the tuning study's best_params.json
    processes: int = 1  # data-parallel CPU processes of one job; a job with several GPUs runs one per GPU instead
    distributed: str = "ddp"  # how several processes share the model: ddp (replicas) or fsdp (sharded, large decoders)
    precision: str = "auto"  # forward passes in bf16 autocast (bf16), float32 (fp32), or bf16 on GPUs that have it (auto)
    compile: bool = False  # torch.compile the classifier: a one-off compile (seconds to minutes) for faster steps
    optimizer: str = "AdamW"  # any torch.optim class (seqpeft.recipe); PEFT-SP: Adamax
    optimizer_args: dict = field(default_factory=dict)  # further arguments of that class (betas, eps, ...)
    scheduler: str = "linear"  # linear decay after warm-up, or constant (PEFT-SP: no scheduler)
    select_on: str = "mcc"  # model selection and early stopping on dev MCC (or the objective's score), or dev loss

    def __post_init__(self) -> None:
        from seqpeft.distributed import MODES

        if self.distributed not in MODES:
            raise SeqpeftInputError(None, f"training.distributed {self.distributed!r} is unknown.", fix=f"use one of {MODES}.")
        if int(self.processes) < 1:
            raise SeqpeftInputError(None, f"training.processes is {self.processes}.", fix="use 1 or more.")
        if self.precision not in PRECISIONS:
            raise SeqpeftInputError(None, f"training.precision {self.precision!r} is unknown.", fix=f"use one of {PRECISIONS}.")
        from seqpeft.recipe import SELECT_ON

        if self.select_on not in SELECT_ON:
            raise SeqpeftInputError(None, f"training.select_on {self.select_on!r} is unknown.", fix=f"use one of {SELECT_ON}.")

    @classmethod
    def from_dict(cls, values: dict) -> "TrainingConfig":
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise SeqpeftInputError(None, f"unknown training settings {unknown}.", fix=f"use only {sorted(known)}.")
        return cls(**values)


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

    @property
    def dsp(self) -> dict | None:
        """Domain-shift prompting settings of a DSP variant (``seqpeft.config.finetune_method_params``)."""
        return self.method_spec.get("dsp")

    def to_dict(self) -> dict:
        """JSON-ready, with absolute paths (the worker processes of a multi-process job read it)."""
        values = asdict(self)
        values.update({name: str(Path(values[name]).resolve()) for name in self.PATHS if values[name] is not None})
        return values

    @classmethod
    def from_dict(cls, values: dict) -> "FinetuneJob":
        return cls(**{**values, **{name: Path(values[name]) for name in cls.PATHS if values.get(name) is not None}})


@dataclass
class Split:
    """The tokenized sequences of one split and how to batch them."""

    data: TokenizedSplit
    per_residue: bool
    leading_specials: int = 1
    extra: dict = field(default_factory=dict)

    def subset(self, rows: np.ndarray) -> "Split":
        return Split(self.data.subset(rows), self.per_residue, self.leading_specials,
                     {key: values[rows] for key, values in self.extra.items()})


FOLD_PARTITIONS = (0, 1, 2)


def fold_indices(partitions: np.ndarray, fold: str) -> dict[str, np.ndarray]:
    """Indices for a cross-validation fold ``t{T}v{V}``: test on T, select on V, train on the rest."""
    if len(fold) != 4 or fold[0] != "t" or fold[2] != "v" or not fold[1].isdigit() or not fold[3].isdigit():
        raise SeqpeftInputError(None, f"partition {fold!r} is not a cross-validation fold.", fix="use t{T}v{V}, e.g. t0v1.")
    test, dev = int(fold[1]), int(fold[3])
    if test == dev or test not in FOLD_PARTITIONS or dev not in FOLD_PARTITIONS:
        raise SeqpeftInputError(None, f"partition {fold!r} needs two different partitions among 0, 1, 2.", fix="e.g. t0v1.")
    (train,) = [p for p in FOLD_PARTITIONS if p not in (test, dev)]
    return {name: np.flatnonzero(partitions == p) for name, p in (("train", train), ("dev", dev), ("test", test))}


def task_splits(cache: TokenizedTask, partition: str) -> dict[str, Split]:
    """train/dev/test splits of a cached task for one partition wildcard value."""
    if cache.kind == "sequence_classification":
        return {name: Split(cache.splits[name], per_residue=False) for name in ("train", "dev", "test")}
    everything = cache.splits["all"]
    records = cache.meta["records"]
    leading = int(cache.meta.get("leading_specials", 1))
    result = {}
    for name, indices in fold_indices(records["partition"], partition).items():
        extra = {key: values[indices] for key, values in records.items()}
        result[name] = Split(everything.subset(indices), per_residue=True, leading_specials=leading, extra=extra)
    return result


def length_bucketed_batches(lengths: np.ndarray, batch_size: int, bucket_size: int, rng: np.random.Generator) -> list[np.ndarray]:
    """Shuffle, cut into buckets of ``bucket_size`` batches, sort each bucket by length, shuffle batches.

    Sequences of similar length share a batch, so dynamic padding wastes little, while the order
    of batches stays random from epoch to epoch.
    """
    order = rng.permutation(len(lengths))
    chunk = batch_size * bucket_size
    batches = []
    for start in range(0, len(order), chunk):
        bucket = order[start:start + chunk]
        bucket = bucket[np.argsort(-lengths[bucket], kind="stable")]
        batches.extend(bucket[i:i + batch_size] for i in range(0, len(bucket), batch_size))
    return [batches[i] for i in rng.permutation(len(batches))]


def collate(split: Split, indices: np.ndarray, pad_id: int, max_length: int, torch_module):
    """Pad to the longest sequence of this batch; mask from lengths, never from token ids."""
    torch = torch_module
    data = split.data
    pieces = [data.sequence(i) for i in indices]
    pieces = [p if len(p) <= max_length else np.concatenate([p[:max_length - 1], p[-1:]]) for p in pieces]
    width = max(len(p) for p in pieces)
    input_ids = np.full((len(pieces), width), pad_id, dtype=np.int64)
    attention = np.zeros((len(pieces), width), dtype=np.int64)
    for row, piece in enumerate(pieces):
        input_ids[row, :len(piece)] = piece
        attention[row, :len(piece)] = 1
    if split.per_residue:
        labels = np.full((len(pieces), width), -100, dtype=np.int64)
        for row, index in enumerate(indices):
            residue_labels = data.residue_labels(index)
            room = len(pieces[row]) - split.leading_specials - 1
            residue_labels = residue_labels[:room]
            labels[row, split.leading_specials:split.leading_specials + len(residue_labels)] = residue_labels
    else:
        labels = data.labels[indices].astype(np.int64)
    return torch.from_numpy(input_ids), torch.from_numpy(attention), torch.from_numpy(labels)


def predict_sequences(model, split: Split, pad_id: int, max_length: int, batch_size: int, device) -> dict[str, np.ndarray]:
    """Per-sequence outputs in split order, in inference mode, batched by length: ``labels``,
    ``logits``, ``loss`` (summed cross-entropy) and ``count`` (labelled positions).

    Per-residue splits give each sequence's residue labels and logits (specials and padding
    removed) as object arrays. Per sequence, so that the shards of a multi-process evaluation
    can be merged and scored as one split.
    """
    import torch

    model.eval()
    count = len(split.data)
    order = np.argsort(-split.data.lengths, kind="stable")
    labels_out = np.empty(count, dtype=object) if split.per_residue else np.zeros(count, dtype=np.int64)
    logits_out: np.ndarray | None = np.empty(count, dtype=object) if split.per_residue else None
    losses, counts = np.zeros(count), np.zeros(count, dtype=np.int64)
    with torch.inference_mode():
        for start in progress.iterate(range(0, len(order), batch_size), "eval"):
            indices = order[start:start + batch_size]
            input_ids, attention, labels = collate(split, indices, pad_id, max_length, torch)
            logits = model(input_ids.to(device), attention.to(device)).float().cpu()
            per_position = torch.nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]), labels.reshape(-1),
                                                             ignore_index=-100, reduction="none").reshape(labels.shape)
            kept = labels != -100
            losses[indices] = per_position.reshape(len(indices), -1).sum(dim=1).numpy()
            counts[indices] = kept.reshape(len(indices), -1).sum(dim=1).numpy()
            if split.per_residue:
                for row, index in enumerate(indices):
                    labels_out[index] = labels[row][kept[row]].numpy()
                    logits_out[index] = logits[row][kept[row]].numpy()
            else:
                if logits_out is None:
                    logits_out = np.zeros((count, logits.shape[-1]), dtype=np.float32)
                labels_out[indices] = labels.numpy()
                logits_out[indices] = logits.numpy()
    if logits_out is None:
        logits_out = np.zeros((0, 0), dtype=np.float32)
    return {"labels": labels_out, "logits": logits_out, "loss": losses, "count": counts}


def flat_predictions(predictions: dict[str, np.ndarray]) -> tuple[np.ndarray, np.ndarray, float]:
    """(labels, logits, mean loss) with per-residue outputs flattened."""
    labels, logits = predictions["labels"], predictions["logits"]
    if labels.dtype == object:
        width = next((item.shape[-1] for item in logits if item.size), 1)
        labels = np.concatenate(list(labels)) if len(labels) else np.zeros(0, dtype=np.int64)
        logits = np.concatenate([item.reshape(-1, width) for item in logits]) if len(logits) else np.zeros((0, width))
    return labels, logits, float(predictions["loss"].sum()) / max(int(predictions["count"].sum()), 1)


def predict_split(model, split: Split, pad_id: int, max_length: int, batch_size: int, device) -> tuple[np.ndarray, np.ndarray, float]:
    """(labels, logits, mean loss) over a split; per-residue tasks give flattened residue positions."""
    return flat_predictions(predict_sequences(model, split, pad_id, max_length, batch_size, device))


def evaluate_split(model, split: Split, pad_id: int, max_length: int, batch_size: int, device) -> dict[str, float]:
    from seqpeft.metrics import classification_metrics

    return classification_metrics(*predict_split(model, split, pad_id, max_length, batch_size, device))


def evaluate(objective, model, split: Split, pad_id: int, max_length: int, batch_size: int, device, ranks) -> dict:
    """The objective's metrics on a split; with several ranks each predicts its share and all
    score the gathered predictions, so every rank gets the same metrics (and stops together)."""
    if not ranks.distributed:
        return objective.score(split, objective.predict(model, split, pad_id, max_length, batch_size, device))
    rows = ranks.eval_rows(len(split.data))
    predictions = objective.predict(model, split.subset(rows), pad_id, max_length, batch_size, device)
    ranks.reshard(model)
    return objective.score(split, ranks.gather_rows(rows, predictions, len(split.data)))


def _resolve_device(name: str):
    import torch

    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise SeqpeftInputError(None, "training.device is 'cuda' but no CUDA device is visible.",
                                fix="run on a GPU node, or set training.device: auto.")
    return torch.device(name)


PRECISIONS = ("auto", "fp32", "bf16")


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


def _rss_mb() -> float:
    with open("/proc/self/statm") as handle:
        return int(handle.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def check_dsp_cache(cache: TokenizedTask, dsp: dict | None, cache_path: Path, model: str) -> None:
    """A DSP variant must train on a cache made with its exact DSP settings, any other run on a plain one."""
    from seqpeft.dsp import DspSettings

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


def _seed_for(training: TrainingConfig, partition: str) -> int:
    # A GUE partition is a replicate: its number shifts the seed. A fold keeps the base seed.
    return training.seed + (int(partition) if partition.isdigit() else 0)


def build_model(job_model_dir: Path, model_spec: dict, method_name: str, method_spec: dict, num_labels: int,
                per_residue: bool, total_steps: int, model_name: str = ""):
    """Backbone + method + head; returns (classifier, method, method_args, loaded)."""
    from seqpeft.methods import MethodContext, resolve_method
    from seqpeft.models import load_backbone, make_classifier

    reuse_head = bool(model_spec.get("reuse_pretrained_head", False))
    method, args = resolve_method(method_name, method_spec)
    extra = method.load_kwargs(args) if method.load_kwargs is not None else None
    loaded = load_backbone(job_model_dir, model_spec, num_labels=num_labels if reuse_head else None, extra_kwargs=extra)
    loaded.backbone = method.apply(loaded.backbone, args, MethodContext(loaded.family, total_steps, model_name))
    model = make_classifier(loaded, num_labels, pooling=model_spec.get("pooling"), per_residue=per_residue,
                            dropout=float(model_spec.get("head_dropout", 0.1)))
    if not method_spec.get("train_head", True):  # seqpeft.recipe.freeze_head: the Galaxy tutorial's frozen random head
        from seqpeft.recipe import freeze_head

        freeze_head(model)
    return model, method, args, loaded


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


def _job_key(job: FinetuneJob, world_size: int = 1) -> str:
    import hashlib

    settings = {"task": job.task, "model": job.model, "method": job.method, "partition": str(job.partition),
                "task_spec": job.task_spec, "model_spec": job.model_spec, "method_spec": job.method_spec,
                "training": job.training}
    if world_size > 1:  # per-rank RNG states and sharded optimizer state fit only the same world size
        settings["world_size"] = world_size
    return hashlib.sha256(json.dumps(settings, sort_keys=True, default=str).encode()).hexdigest()


class _TermFlag:
    """Turns SIGTERM (SLURM preemption, scancel, time limit) into a flag checked between steps."""

    def __init__(self):
        self.raised = False
        self.previous = None

    def __enter__(self):
        import signal
        import threading

        if threading.current_thread() is threading.main_thread():
            self.previous = signal.signal(signal.SIGTERM, self._handle)
        return self

    def _handle(self, signum, frame):
        self.raised = True

    def __exit__(self, *exc):
        import signal

        if self.previous is not None:
            signal.signal(signal.SIGTERM, self.previous)
        return False


def _rng_state(rng: np.random.Generator) -> dict:
    return copy.deepcopy(rng.bit_generator.state)


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


def _training_step(torch, loss_model, method, split: Split, indices, pad_id, max_length, device, micro_batch_size,
                   objective, ranks, core):
    """Forward/backward of this rank's share of one batch, as micro-batches; returns its share of
    the batch loss (the shares of all ranks sum to the loss of the whole batch).

    The loss is summed over the share and divided by the batch's labelled count over all ranks,
    times the world size: DDP averages gradients over ranks, so the result is the gradient of the
    batch mean, as if one process had computed the batch unsplit. ``loss_model`` computes a
    micro-batch's summed loss (DDP-wrapped in a multi-process job), ``core`` is the classifier.
    """
    rows = ranks.batch_rows(indices)
    count = ranks.micro_batches(len(indices), micro_batch_size)
    # A rank with no rows left (the last, short batch of an epoch) still runs one forward/backward,
    # on a borrowed row with weight 0, so that it joins the gradient all-reduce of the step.
    chunks = [(chunk, 1) if len(chunk) else (indices[:1], 0)
              for chunk in (rows[i * micro_batch_size:(i + 1) * micro_batch_size] for i in range(count))]
    prepared = [collate(split, chunk, pad_id, max_length, torch) for chunk, _ in chunks]
    real = [(batch, chunk) for batch, (chunk, weight) in zip(prepared, chunks) if weight]
    local_normaliser = objective.normaliser([batch for batch, _ in real], np.concatenate([c for _, c in real]) if real else rows)
    normaliser = max(ranks.sum([local_normaliser])[0], 1)
    share = 0.0
    for number, ((chunk, weight), (input_ids, attention, labels)) in enumerate(zip(chunks, prepared)):
        with ranks.no_sync(loss_model, last=number == count - 1):
            loss = loss_model(input_ids.to(device), attention.to(device), labels.to(device), split, chunk)
            loss = loss * ranks.world_size / normaliser
            if not weight:
                loss = loss * 0.0
            loss.backward()
        share += float(loss.detach()) / ranks.world_size
    if method.extra_loss is not None:
        # The same on every rank; its gradient is added after the all-reduce (no DDP forward is
        # involved), so it counts once, as in one process.
        extra = method.extra_loss(core.backbone)
        if extra is not None:
            extra.backward()
            if ranks.is_main:
                share += float(extra.detach())
    return share


def _apply_tuning(job: FinetuneJob, say: Callable = print) -> tuple[FinetuneJob, dict | None]:
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
    from seqpeft.tune import read_best_params

    tuned = read_best_params(job.best_params)
    training = {**job.training, **tuned["params"]}
    say(f"[seqpeft] tuned settings from {job.best_params}: " +
        ", ".join(f"{key} {value}" for key, value in tuned["params"].items()))
    record = {**tuned["params"], "best_dev": tuned["best_value"], "trials_complete": tuned["trials"]["complete"],
              "trials_pruned": tuned["trials"]["pruned"], "best_params": str(job.best_params)}
    return replace(job, training=training), record


def run_finetune(job: FinetuneJob, on_evaluate: Callable[[int, dict], None] | None = None,
                 dev_only: bool = False) -> dict:
    """Train, early-stop on dev MCC, restore the best weights, test, and write the run directory.

    Resumable: a checkpoint (trainable weights, optimizer, scheduler, RNG states, position in the
    epoch's batch order, history) is saved atomically every ``checkpoint_minutes`` and at every
    evaluation; SIGTERM saves one and raises ``Preempted``; the next run of the same job resumes
    from it and ends with the same metrics as an uninterrupted run.

    ``on_evaluate(evaluation, dev_metrics)`` is called after every dev evaluation (numbered from
    1, so the same number means the same fraction of training whatever the batch size); an
    exception it raises ends the run (hyper-parameter search prunes trials this way).
    ``dev_only`` trains and selects on dev but touches nothing else: no checkpoints, no test
    evaluation, no files; it returns the best dev metrics and the history.

    A job with several processes (``training.processes``, or more than one GPU) starts them here
    and waits (``seqpeft.distributed.launch``); each runs ``train``.
    """
    from seqpeft.distributed import launch, setup_problem, world_size
    from seqpeft.methods import resolve_method

    training = TrainingConfig.from_dict(job.training)
    world = world_size(int(training.processes), int(job.gpus), training.device)
    if world > 1 and (dev_only or on_evaluate is not None):
        # A tuning trial reports each evaluation to its study from this process: it trains alone,
        # to the same dev metrics as its processes would (the same global batches and updates).
        job = replace(job, training={**job.training, "processes": 1}, gpus=min(int(job.gpus), 1))
        world = 1
    if world > 1:
        method, _ = resolve_method(job.method, job.method_spec)
        kind = str(job.task_spec.get("kind", "sequence_classification"))
        problem = setup_problem(world, training.batch_size, training.distributed, method, kind)
        if problem:  # before starting processes that would all fail the same way
            raise SeqpeftInputError(None, f"training.{problem[0]}: {problem[1]}", fix=problem[2])
        return launch(job, world)
    return train(job, on_evaluate, dev_only)


def train(job: FinetuneJob, on_evaluate: Callable[[int, dict], None] | None = None, dev_only: bool = False) -> dict:
    """``run_finetune`` in this process: alone, or as one rank of a multi-process job (the
    environment says which rank), where only rank 0 prints and writes."""
    import torch

    from seqpeft.distributed import SINGLE, join, setup_problem, world_size

    training = TrainingConfig.from_dict(job.training)
    world = world_size(int(training.processes), int(job.gpus), training.device)
    ranks = join(world, int(job.gpus), training.distributed) if world > 1 else SINGLE  # before the slow imports

    from seqpeft.models import count_parameters
    from seqpeft.objectives import loss_module, objective_for
    from seqpeft.signalp_regions import SignalPeptideSettings
    from seqpeft.tokenize import tokenizer_fingerprint

    say = print if ranks.is_main else (lambda *args, **kwargs: None)
    job, tuned = _apply_tuning(job, say)
    training = TrainingConfig.from_dict(job.training)
    torch.set_num_threads(max(1, int(job.threads) // ranks.world_size))
    seed = _seed_for(training, str(job.partition))
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    device = ranks.device if ranks.distributed else _resolve_device(training.device)
    cache = load_cache(job.cache_path)
    check_dsp_cache(cache, job.dsp, job.cache_path, job.model)
    if job.dsp is not None and int(job.dsp["max_length"]) != int(job.model_spec.get("max_length", 512)):
        # collate would cut the end of the template off inputs made for a longer limit
        raise SeqpeftInputError(job.cache_path, f"DSP inputs were made for max_length={job.dsp['max_length']} but model "
                                f"{job.model!r} uses {job.model_spec.get('max_length', 512)}.",
                                fix="take the DSP settings from the same model entry.")
    splits = task_splits(cache, str(job.partition))
    if training.max_train_samples and len(splits["train"].data) > training.max_train_samples:
        keep = np.sort(rng.choice(len(splits["train"].data), training.max_train_samples, replace=False))
        splits["train"] = splits["train"].subset(keep)
    for name, split in splits.items():
        if len(split.data) == 0:
            raise SeqpeftInputError(job.cache_path, f"the {name} split of partition {job.partition!r} is empty.",
                                    fix="check the task's partitions.")
    per_residue = cache.kind == "signal_peptide"
    objective = objective_for(cache.kind, job.task_spec)
    num_labels = objective.num_outputs(int(cache.meta["num_labels"]))
    steps_per_epoch = math.ceil(len(splits["train"].data) / training.batch_size)
    total_steps = steps_per_epoch * training.epochs

    rss_before = _rss_mb()
    model, method, method_args, loaded = build_model(job.model_dir, job.model_spec, job.method, job.method_spec,
                                                     num_labels, per_residue, total_steps, job.model)
    objective.attach(model)
    if problem := setup_problem(ranks.world_size, training.batch_size, training.distributed, method, cache.kind):
        raise SeqpeftInputError(None, f"training.{problem[0]}: {problem[1]}", fix=problem[2])
    if tokenizer_fingerprint(loaded.tokenizer) != cache.fingerprint:
        raise SeqpeftInputError(job.cache_path, f"was tokenized with a different tokenizer than model {job.model!r} uses.",
                                fix="delete the cache and rerun the tokenize rule; check models.<name>.tokenizer.")
    pad_id = loaded.tokenizer.pad_token_id
    max_length = int(job.model_spec.get("max_length", 512))
    truncated = int(sum((s.data.lengths > max_length).sum() for s in splits.values()))
    if truncated and job.model_spec.get("on_too_long", "truncate") == "refuse":
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
    model.to(device)
    precision = resolve_precision(torch, training.precision, device)
    apply_precision(torch, model, precision, device)
    if training.compile:
        compile_model(model, ranks)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    trainable, total = count_parameters(model)
    if ranks.rank:
        torch.manual_seed(seed + 7919 * ranks.rank)  # dropout masks of its own on every rank
    core = model  # the classifier; training calls loss_model (DDP-wrapped, or around a sharded core)
    loss_model = ranks.parallelize(core, loss_module(core, objective))
    trainable_params = [p for p in core.parameters() if p.requires_grad]
    from seqpeft.recipe import adapter_settings, make_optimizer, make_scheduler, selection_score

    optimizer = make_optimizer(training.optimizer, training.optimizer_args, trainable_params, training.learning_rate,
                               training.weight_decay,
                               # one kernel, not one per small tensor (not for sharded DTensor parameters)
                               fused=device.type in ("cpu", "cuda") and not ranks.shards_parameters)
    scheduler = make_scheduler(training.scheduler, optimizer, int(training.warmup_ratio * total_steps), total_steps)
    eval_every = max(1, math.ceil(steps_per_epoch / training.evals_per_epoch))

    out_dir = Path(job.out_dir)
    checkpointer = Checkpointer(out_dir, _job_key(job, ranks.world_size), training.checkpoint_minutes * 60,
                                writer=ranks.is_main)
    state, best_state = LoopState(micro_batch_size=training.batch_size), None
    # Rank 0 first: it discards a checkpoint of other settings before the others look.
    saved = checkpointer.load(mmap=ranks.distributed) if ranks.is_main and not dev_only else None
    ranks.barrier()
    if not ranks.is_main and not dev_only:
        saved = checkpointer.load(mmap=True)
    if saved is not None:
        ranks.load_trainable(core, saved["trainable"])
        ranks.load_optimizer_state(core, optimizer, saved["optimizer"])
        scheduler.load_state_dict(saved["scheduler"])
        torch_rng = saved["torch_rng"]
        torch.set_rng_state(torch_rng[ranks.rank] if isinstance(torch_rng, list) else torch_rng)
        rng.bit_generator.state = saved["numpy_rng"]
        if method.load_state is not None:
            method.load_state(core.backbone, saved["method_state"])
        state, best_state = saved["loop"], saved["best_state"] if ranks.is_main else None
        say(f"[seqpeft] resuming from step {state.step} (epoch {state.epoch + 1}, batch {state.batch_in_epoch})")
    else:
        processes = f" x {ranks.world_size} processes ({ranks.mode})" if ranks.distributed else ""
        say(f"[seqpeft] start {job.task}/{job.model}/{job.method}/{job.partition}: trainable {trainable:,} of {total:,} "
            f"parameters, {len(splits['train'].data)} train sequences, {total_steps} steps on {device}{processes}")

    def save_checkpoint():
        # Every rank takes part (gathered RNG states and sharded weights); rank 0 writes.
        checkpointer.save({
            "trainable": ranks.trainable_state(core), "optimizer": ranks.optimizer_state(core, optimizer),
            "scheduler": scheduler.state_dict(), "torch_rng": ranks.gather(torch.get_rng_state()),
            "numpy_rng": _rng_state(rng), "loop": state, "best_state": best_state,
            "method_state": method.save_state(core.backbone) if method.save_state is not None else None,
        })

    with _TermFlag() as term:
        while not state.finished and state.epoch < training.epochs:
            if state.batch_in_epoch == 0:
                state.epoch_rng_state = _rng_state(rng)
            else:
                rng.bit_generator.state = copy.deepcopy(state.epoch_rng_state)
            batches = length_bucketed_batches(splits["train"].data.lengths, training.batch_size, training.bucket_size, rng)
            epoch_bar = progress.bar(len(batches), f"epoch {state.epoch + 1}", initial=state.batch_in_epoch)
            while state.batch_in_epoch < len(batches):
                indices = batches[state.batch_in_epoch]
                started = time.perf_counter()
                loss_model.train()
                loss = _step_with_oom_retry(torch, loss_model, method, splits["train"], indices, pad_id, max_length, device, state,
                                            objective, ranks, core)
                torch.nn.utils.clip_grad_norm_(trainable_params, training.max_grad_norm)
                optimizer.step()
                scheduler.step()
                state.step += 1
                state.batch_in_epoch += 1
                if method.after_optimizer_step is not None:
                    method.after_optimizer_step(core.backbone, state.step)
                optimizer.zero_grad(set_to_none=True)
                # One all-reduce: the batch loss, and whether any rank got SIGTERM or rank 0's
                # checkpoint clock ran out, so that every rank stops and saves at the same step.
                loss, stop_votes, due_votes = ranks.sum([loss, float(term.raised), float(ranks.is_main and checkpointer.due())])
                state.running_loss += loss
                state.running_count += 1
                state.samples += len(indices)
                state.train_seconds += time.perf_counter() - started
                epoch_bar.update()
                evaluated = state.step % eval_every == 0 or state.batch_in_epoch == len(batches)
                if evaluated:
                    dev = evaluate(objective, core, splits["dev"], pad_id, max_length, training.eval_batch_size, device, ranks)
                    state.history.append({
                        "step": state.step, "epoch": round(state.step / steps_per_epoch, 4),
                        "wall_seconds": round(state.train_seconds, 4),
                        "train_loss": state.running_loss / max(state.running_count, 1), "dev_loss": dev["loss"],
                        "dev_mcc": dev["mcc"], "dev_accuracy": dev["accuracy"]})
                    state.running_loss, state.running_count = 0.0, 0
                    say(f"[seqpeft] step {state.step} epoch {state.history[-1]['epoch']:.2f}: "
                        f"dev loss {dev['loss']:.4f} mcc {dev['mcc']:.4f}", flush=True)
                    score = selection_score(dev, training.select_on)  # seqpeft.recipe: MCC, or minus the loss
                    if "step" not in state.best or score > selection_score(state.best, training.select_on):
                        state.best = {**dev, "step": state.step, "epoch": state.epoch + 1}
                        best_state = ranks.trainable_state(core)
                        state.since_best = 0
                    else:
                        state.since_best += 1
                        if state.since_best >= training.patience:
                            state.finished = True
                    if on_evaluate is not None:
                        on_evaluate(len(state.history), dev)
                if state.batch_in_epoch == len(batches):
                    state.epoch, state.batch_in_epoch = state.epoch + 1, 0
                if stop_votes:
                    if dev_only:
                        raise Preempted(f"SIGTERM at step {state.step} of a dev-only run (nothing saved)")
                    save_checkpoint()
                    raise Preempted(f"SIGTERM at step {state.step}: checkpoint saved to {checkpointer.path}; rerun to resume")
                if not dev_only and (evaluated or due_votes):
                    save_checkpoint()
                if state.finished or state.batch_in_epoch == 0:
                    break  # early stop, or the epoch is over: the next one draws a new batch order
            epoch_bar.close()

    best = state.best
    dev_best = {key: value for key, value in best.items() if key not in ("step", "epoch")}
    if dev_only:
        return {"dev": dev_best, "best_epoch": int(best.get("epoch", 0)), "best_step": int(best.get("step", 0)),
                "steps": state.step, "history": state.history, "training": asdict(training)}
    if "step" in best:  # a best evaluation was recorded (the same on every rank)
        ranks.load_trainable(core, best_state)
    test = evaluate(objective, core, splits["test"], pad_id, max_length, training.eval_batch_size, device, ranks)
    if device.type == "cuda":
        peak_mb, memory_device = torch.cuda.max_memory_allocated(device) / 2**20, "cuda"
    else:
        peak_mb, memory_device = max(0.0, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024 - rss_before), "cpu"
    peak_mb = max(ranks.gather(peak_mb))  # the largest process's: what one GPU (or process) must hold
    metrics = {
        "task": job.task, "model": job.model, "method": job.method, "partition": str(job.partition),
        "task_kind": cache.kind, "test": test, "dev": dev_best,
        "trainable_params": trainable, "total_params": total,
        "peak_memory_mb": round(peak_mb, 2), "memory_device": memory_device,
        "train_seconds": round(state.train_seconds, 3),
        "train_samples_per_second": round(state.samples / max(state.train_seconds, 1e-9), 2),
        "best_epoch": int(best.get("epoch", 0)), "best_step": int(best.get("step", 0)),
        "epochs_run": math.ceil(state.step / steps_per_epoch), "steps": state.step, "seed": seed,
        "truncated_sequences": truncated, "device": str(device),
        "world_size": ranks.world_size, "distributed": ranks.mode, "precision": precision,
        "micro_batch_size": state.micro_batch_size,
        "gradient_accumulation": math.ceil(training.batch_size / state.micro_batch_size),
        "oom_events": state.oom_events,
        "training": asdict(training), "method_args": method_args,
        "remove_top_layers": int(job.model_spec.get("remove_top_layers") or 0),
        # the recipe as it reached the model (seqpeft.recipe): input length, head, adapter settings in effect
        "max_length": max_length, "train_head": bool(job.method_spec.get("train_head", True)),
        **({"adapter_config": adapter} if (adapter := adapter_settings(core.backbone)) else {}),
        **({"signal_peptide": asdict(SignalPeptideSettings.from_task(job.task_spec))} if per_residue else {}),
        **({"hpo": tuned} if tuned is not None else {}),
        **({"quantization": loaded.quantization} if loaded.quantization else {}),
    }
    if job.dsp is not None:
        metrics["dsp"] = {"encoding": job.dsp["encoding"], "domain": job.dsp["domain"],
                          "template_tokens": cache.meta["dsp"]["template_tokens"]}
    saved_model = core
    if ranks.shards_parameters:
        # save_pretrained needs whole tensors: rank 0 rebuilds the model unsharded on the CPU.
        weights = ranks.trainable_state(core)
        if ranks.is_main:
            saved_model = build_model(job.model_dir, job.model_spec, job.method, job.method_spec, num_labels, per_residue,
                                      total_steps, job.model)[0]
            objective.attach(saved_model)
            saved_model.load_state_dict(weights, strict=False)
    if ranks.is_main:
        save_artifacts(saved_model, method.uses_peft, loaded.tokenizer, out_dir / "artifacts", {
            "base_model": str(Path(job.model_dir).resolve()), "model_spec": job.model_spec, "model": job.model,
            "method": job.method, "method_spec": job.method_spec, "task": job.task, "task_kind": cache.kind,
            "num_labels": num_labels, "label_names": cache.meta.get("label_names"), "pooling": core.pooling,
            "max_length": max_length, "per_residue": per_residue, "dsp": cache.meta.get("dsp"),
            "signal_peptide": job.task_spec.get("signal_peptide"),
        }, trainable_only=method.saves_trainable)
        write_history(out_dir / "history.csv", state.history)
        write_json_atomic(out_dir / "metrics.json", metrics)
        checkpointer.clear()
    say(f"[seqpeft] done {job.task}/{job.model}/{job.method}/{job.partition}: test mcc {test['mcc']:.4f} "
        f"(best epoch {metrics['best_epoch']}, {state.train_seconds:.1f} s)")
    return metrics


def _is_out_of_memory(torch, error: BaseException) -> bool:
    return isinstance(error, torch.cuda.OutOfMemoryError)


def _step_with_oom_retry(torch, model, method, split, indices, pad_id, max_length, device, state: LoopState,
                         objective, ranks, core) -> float:
    """One optimizer step's forward/backward; on CUDA OOM halve the micro-batch and try again.

    The effective batch stays the same (more micro-batches are accumulated); only at micro-batch
    1 does the job fail, with a message that says what to change. In a multi-process job the
    other ranks are already waiting in the step's all-reduce, so there OOM fails the job.
    """
    while True:
        try:
            return _training_step(torch, model, method, split, indices, pad_id, max_length, device, state.micro_batch_size,
                                  objective, ranks, core)
        except Exception as error:  # noqa: BLE001 - only OOM is handled, everything else re-raised
            if not _is_out_of_memory(torch, error):
                raise
            if ranks is not None and ranks.distributed:
                raise SeqpeftInputError(None, f"out of GPU memory at step {state.step + 1} on rank {ranks.rank} of "
                                        f"{ranks.world_size}; a multi-process job cannot halve its micro-batch in step.",
                                        fix="lower training.batch_size, use training.distributed: fsdp, or more GPUs.") from error
            for param in model.parameters():
                param.grad = None
            if device.type == "cuda":
                torch.cuda.empty_cache()
            if state.micro_batch_size <= 1:
                raise SeqpeftInputError(None, f"out of GPU memory at micro-batch 1 (step {state.step + 1}).",
                                        fix="use a GPU with more memory, a smaller max_length, or a parameter-efficient method / QLoRA.") from error
            state.micro_batch_size = max(1, state.micro_batch_size // 2)
            state.oom_events.append({"step": state.step + 1, "micro_batch_size": state.micro_batch_size})
            print(f"[seqpeft] CUDA out of memory at step {state.step + 1}: micro-batch now {state.micro_batch_size}")


def save_artifacts(model, uses_peft: bool, tokenizer, out_dir: Path, description: dict, trainable_only: bool = False) -> None:
    """The trained adapter (peft ``save_pretrained``), or full backbone, plus head and tokenizer."""
    from safetensors.torch import save_file

    with atomic_directory(out_dir) as tmp:
        backbone_kind = "frozen"
        if trainable_only:
            save_file({k: v.detach().cpu().contiguous() for k, v in model.backbone.named_parameters() if v.requires_grad},
                      str(tmp / "trainable.safetensors"))
            backbone_kind = "trainable"
        elif uses_peft:
            model.backbone.save_pretrained(tmp / "adapter")
            backbone_kind = "adapter"
        elif any(p.requires_grad for p in model.backbone.parameters()):
            model.backbone.save_pretrained(tmp / "backbone")
            backbone_kind = "backbone"
        save_file({k: v.detach().cpu().contiguous() for k, v in model.head.state_dict().items()}, str(tmp / "head.safetensors"))
        if getattr(model, "crf", None) is not None:
            save_file({k: v.detach().cpu().contiguous() for k, v in model.crf.state_dict().items()}, str(tmp / "crf.safetensors"))
        if getattr(model, "pooler", None) is not None:
            save_file({k: v.detach().cpu().contiguous() for k, v in model.pooler.state_dict().items()}, str(tmp / "pooler.safetensors"))
        tokenizer.save_pretrained(tmp / "tokenizer")
        write_json_atomic(tmp / "seqpeft.json", {**description, "weights": backbone_kind, "format": 1})


def write_json_atomic(path: Path, payload: dict) -> None:
    write_text_atomic(Path(path), json.dumps(payload, indent=2, sort_keys=False, default=_json_default) + "\n")


def _json_default(value):
    if isinstance(value, (np.integer,)):
        return int(value)
    if isinstance(value, (np.floating,)):
        return float(value)
    if isinstance(value, (set, tuple)):
        return list(value)
    return str(value)


def write_history(path: Path, rows: list[dict]) -> None:
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=HISTORY_COLUMNS, lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    write_text_atomic(Path(path), buffer.getvalue())


def load_trained(artifacts_dir: Path, base_model_dir: Path | None = None):
    """Rebuild a trained classifier from a run's ``artifacts`` directory (for predict/evaluate)."""
    import torch
    from safetensors.torch import load_file

    from seqpeft.methods import MethodContext, resolve_method
    from seqpeft.models import load_backbone, make_classifier

    artifacts_dir = Path(artifacts_dir)
    description_path = artifacts_dir / "seqpeft.json"
    if not description_path.is_file():
        raise SeqpeftInputError(artifacts_dir, "is not a seqpeft run's artifacts directory (no seqpeft.json).",
                                fix="pass results/runs/<task>/<model>/<method>/<partition>/artifacts.")
    description = json.loads(description_path.read_text())
    base = Path(base_model_dir or description["base_model"])
    if description["weights"] == "backbone":
        base = artifacts_dir / "backbone"
    method, args = resolve_method(description["method"], description.get("method_spec") or {})
    extra = method.load_kwargs(args) if method.load_kwargs is not None else None
    loaded = load_backbone(base, description.get("model_spec"), extra_kwargs=extra, tokenizer_dir=artifacts_dir / "tokenizer")
    if description["weights"] == "adapter":
        from peft import PeftModel

        if method.load_adapter is not None:
            loaded.backbone = method.load_adapter(loaded.backbone, artifacts_dir / "adapter")
        else:
            loaded.backbone = PeftModel.from_pretrained(loaded.backbone, str(artifacts_dir / "adapter"))
    if description["weights"] == "trainable":
        loaded.backbone = method.apply(loaded.backbone, args, MethodContext(loaded.family, 1, description.get("model", "")))
        trained = load_file(str(artifacts_dir / "trainable.safetensors"))
        unknown = set(trained) - {name for name, _ in loaded.backbone.named_parameters()}
        if unknown:
            raise SeqpeftInputError(artifacts_dir, f"trainable weights {sorted(unknown)[:3]} do not fit the rebuilt model.",
                                    fix="load the run with the seqpeft version that trained it.")
        loaded.backbone.load_state_dict(trained, strict=False)
    head = load_file(str(artifacts_dir / "head.safetensors"))
    loaded.pretrained_head = {}
    model = make_classifier(loaded, description["num_labels"], pooling=description["pooling"],
                            per_residue=description["per_residue"])
    if "bias" not in head:
        model.head.bias = None
    with torch.no_grad():
        model.head.load_state_dict(head)
        if (artifacts_dir / "pooler.safetensors").is_file():
            model.attach_pooler()
            model.pooler.load_state_dict(load_file(str(artifacts_dir / "pooler.safetensors")))
    if (artifacts_dir / "crf.safetensors").is_file():
        from seqpeft.objectives import objective_for

        objective_for(description["task_kind"], {"signal_peptide": description.get("signal_peptide")}).attach(model)
        model.crf.load_state_dict(load_file(str(artifacts_dir / "crf.safetensors")))
    model.eval()
    loaded.tokenizer = load_tokenizer_dir(artifacts_dir / "tokenizer")
    return model, loaded, description


def load_tokenizer_dir(path: Path):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(str(path))
