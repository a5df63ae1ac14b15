"""The training loop of one fine-tuning job (or of one rank of it): from a tokenized cache to metrics.

A plain PyTorch loop rather than the Hugging Face Trainer, because the benchmark needs what the
Trainer does not do: AdaLoRA's per-step budget update, length-bucketed batches with dynamic
padding, pooling that is right under prompt methods, and per-evaluation history with wall time.

``train`` reads as the algorithm: prepare the data, the model and the optimizer; resume from a
checkpoint if there is one; train epoch by epoch, evaluating on dev and keeping the best weights
until patience runs out; then test the best weights and write the run directory.
"""

from __future__ import annotations

import copy
import math
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np

from seqpeft.util import progress
from seqpeft.training.artifacts import base_model_reference, save_artifacts, write_history
from seqpeft.training.assemble import (apply_precision, build_model, check_dsp_cache, compile_model, count_truncated, reset_cpu_peak,
                              resolve_device, resolve_precision)
from seqpeft.util.atomic import write_json_atomic
from seqpeft.core.batching import Split, length_bucketed_batches
from seqpeft.training.step import OutOfMemoryAtOne, step_with_oom_retry
from seqpeft.models.classifier import count_parameters
from seqpeft.training.checkpoint import (Checkpointer, LoopState, OomRecord, Preempted, TermFlag, apply_determinism, job_key, restore_torch_rng_states,
                                rng_state, torch_rng_states)
from seqpeft.training.distributed import SINGLE, join
from seqpeft.util.errors import SeqpeftInputError
from seqpeft.models.hf_head import head_description
from seqpeft.core.objectives import loss_module
from seqpeft.config.schema import ENTRY, with_defaults
from seqpeft.training.outcome import dev_best, run_metrics
from seqpeft.training.predict import evaluate, evaluate_with_predictions
from seqpeft.config.recipe import freeze_head, head_snapshot, make_optimizer, make_scheduler, selection_score
from seqpeft.core.registry import TaskKind, task_kind, write_test_predictions
from seqpeft.config.settings import FinetuneJob, TrainingConfig, apply_tuning, seed_for, setup_problem, world_size
from seqpeft.data.tokenize import TokenizedTask, load_cache, tokenizer_fingerprint


@dataclass
class Run:
    """What the steps of one training run share."""

    job: FinetuneJob
    training: TrainingConfig
    ranks: Any
    say: Callable
    dev_only: bool
    on_evaluate: Callable[[int, dict], None] | None
    seed: int
    rng: np.random.Generator
    device: Any
    cache: TokenizedTask
    kind: TaskKind
    splits: dict[str, Split]
    objective: Any
    per_residue: bool
    num_labels: int
    steps_per_epoch: int
    total_steps: int
    memory_measure: str = ""  # what peak_memory_mb measures on CPU (seqpeft.training.assemble)
    core: Any = None  # the classifier; training calls loss_model (DDP-wrapped, or around a sharded core)
    loss_model: Any = None
    method: Any = None
    method_args: dict | None = None
    loaded: Any = None
    pad_id: int = 0
    max_length: int = 0
    truncated: int = 0
    precision: str = "fp32"
    precision_reason: str = ""
    trainable: int = 0
    total: int = 0
    trainable_params: list | None = None
    optimizer: Any = None
    scheduler: Any = None
    eval_every: int = 1
    checkpointer: Checkpointer | None = None
    state: LoopState | None = None
    best_state: Any = None
    initial_head: dict | None = None  # head and CRF weights as built (seqpeft.config.recipe.head_snapshot)


def train(job: FinetuneJob, on_evaluate: Callable[[int, dict], None] | None = None, dev_only: bool = False) -> dict:
    """``seqpeft.training.launch.run_finetune`` in this process: alone, or as one rank of a multi-process job
    (the environment says which rank), where only rank 0 prints and writes."""
    training = TrainingConfig.from_dict(job.training)
    world = world_size(int(training.processes), int(job.gpus), training.device)
    ranks = join(world, int(job.gpus), training.distributed) if world > 1 else SINGLE  # before the slow imports
    say = print if ranks.is_main else (lambda *args, **kwargs: None)
    job, tuned = apply_tuning(job, say)
    if tuned is not None:
        training = TrainingConfig.from_dict(job.training)
    run = prepare_data(job, training, ranks, say, on_evaluate, dev_only)
    oom = None if dev_only or ranks.distributed else OomRecord(Path(job.out_dir), job_key(job))
    gpu, memory = device_memory(run.device)
    if oom is not None and (why := oom.refuse_retry(memory)):
        raise OutOfMemoryAtOne(None, f"not retried: {why}",
                               fix="use a GPU with more memory, a smaller max_length, or a parameter-efficient method / QLoRA "
                                   f"(or delete {oom.path} to try the same again).")
    try:
        prepare_model(run)
        prepare_optimizer(run)
        resume_or_start(run)
        with TermFlag() as term:
            while not run.state.finished and run.state.epoch < training.epochs:
                train_epoch(run, term)
    except OutOfMemoryAtOne as error:
        if oom is not None:
            oom.save(str(error), gpu, memory)
        raise
    if dev_only:
        return dev_result(run)
    if oom is not None:
        oom.clear()
    return finish(run, tuned)


def device_memory(device) -> tuple[str, int]:
    """The training device's name and memory (bytes; 0 for the CPU, which has no fixed budget here)."""
    if device.type != "cuda":
        return "cpu", 0
    import torch

    properties = torch.cuda.get_device_properties(device)
    return properties.name, int(properties.total_memory)


def prepare_data(job: FinetuneJob, training: TrainingConfig, ranks, say: Callable, on_evaluate, dev_only: bool) -> Run:
    """Seed everything, load the cache and cut the partition's splits (train optionally subsampled)."""
    import torch

    torch.set_num_threads(max(1, int(job.threads) // ranks.world_size))
    apply_determinism(torch, training.deterministic)
    seed = seed_for(training, str(job.partition))
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    device = ranks.device if ranks.distributed else resolve_device(training.device, int(job.gpus))
    cache = load_cache(job.cache_path)
    check_dsp_cache(cache, job.dsp, job.cache_path, job.model)
    if job.dsp is not None and int(job.dsp["max_length"]) != int(job.model_spec["max_length"]):
        # collate would cut the end of the template off inputs made for a longer limit
        raise SeqpeftInputError(job.cache_path, f"DSP inputs were made for max_length={job.dsp['max_length']} but model "
                                f"{job.model!r} uses {job.model_spec['max_length']}.",
                                fix="take the DSP settings from the same model entry.")
    kind = task_kind(cache.kind, where=job.cache_path)
    splits = kind.splits(cache, str(job.partition))
    if training.max_train_samples and len(splits["train"].data) > training.max_train_samples:
        keep = np.sort(rng.choice(len(splits["train"].data), training.max_train_samples, replace=False))
        splits["train"] = splits["train"].subset(keep)
    for name, split in splits.items():
        if len(split.data) == 0:
            raise SeqpeftInputError(job.cache_path, f"the {name} split of partition {job.partition!r} is empty.",
                                    fix="check the task's partitions.")
    # what tokenization learnt from the training split (a regression target's scale) reaches the objective
    objective = kind.objective({**(job.task_spec or {}), "fitted": cache.meta.get("fitted")})
    steps_per_epoch = math.ceil(len(splits["train"].data) / training.batch_size)
    return Run(job=job, training=training, ranks=ranks, say=say, dev_only=dev_only, on_evaluate=on_evaluate, seed=seed,
               rng=rng, device=device, cache=cache, kind=kind, splits=splits, objective=objective,
               per_residue=kind.per_residue, num_labels=objective.num_outputs(int(cache.meta["num_labels"])),
               steps_per_epoch=steps_per_epoch, total_steps=steps_per_epoch * training.epochs)


def prepare_model(run: Run) -> None:
    """Backbone + method + head (+ the objective's modules), checked against the cache, on its device."""
    import torch

    job, training, ranks = run.job, run.training, run.ranks
    run.memory_measure = reset_cpu_peak()
    model, run.method, run.method_args, run.loaded = build_model(job.model_dir, job.model_spec, job.method, job.method_spec,
                                                                 run.num_labels, run.per_residue, run.total_steps, job.model)
    run.objective.attach(model)
    if not with_defaults(job.method_spec, "methods", ENTRY)["train_head"]:
        freeze_head(model)  # the objective's CRF as well (PEFT-SP's LoRA runs)
    run.initial_head = head_snapshot(model)
    if problem := setup_problem(ranks.world_size, training.batch_size, training.distributed, run.method, run.cache.kind):
        raise SeqpeftInputError(None, f"training.{problem[0]}: {problem[1]}", fix=problem[2])
    if tokenizer_fingerprint(run.loaded.tokenizer) != run.cache.fingerprint:
        raise SeqpeftInputError(job.cache_path, f"was tokenized with a different tokenizer than model {job.model!r} uses.",
                                fix="delete the cache and rerun the tokenize rule; check models.<name>.tokenizer.")
    run.pad_id = run.loaded.tokenizer.pad_token_id
    run.max_length = int(job.model_spec["max_length"])
    run.truncated = count_truncated(job, run.cache, run.splits, run.max_length, run.say)
    if not ranks.shards_parameters:
        # FSDP moves each block to the GPU as it shards it (ranks.parallelize): the whole model is
        # never on one GPU, so a model larger than one GPU trains and the peak is the sharded one.
        model.to(run.device)
    run.precision, run.precision_reason = resolve_precision(torch, training.precision, run.device)
    apply_precision(torch, model, run.precision, run.device)
    if training.compile:
        compile_model(model, ranks)
    run.trainable, run.total = count_parameters(model)
    if ranks.rank:
        torch.manual_seed(run.seed + 7919 * ranks.rank)  # dropout masks of its own on every rank
    run.core = model
    run.loss_model = ranks.parallelize(model, loss_module(model, run.objective))
    if run.device.type == "cuda":  # the peak of training from here: the model in its training form (sharded)
        torch.cuda.reset_peak_memory_stats(run.device)


def prepare_optimizer(run: Run) -> None:
    """The configured optimizer (AdamW unless set) on the trainable parameters, its schedule, and
    the evaluation period."""
    training = run.training
    run.trainable_params = [p for p in run.core.parameters() if p.requires_grad]
    run.optimizer = make_optimizer(training.optimizer, training.optimizer_args, run.trainable_params,
                                   training.learning_rate, training.weight_decay,
                                   # one kernel, not one per small tensor (not for sharded DTensor parameters)
                                   fused=run.device.type in ("cpu", "cuda") and not run.ranks.shards_parameters)
    run.scheduler = make_scheduler(training.scheduler, run.optimizer, int(training.warmup_ratio * run.total_steps),
                                   run.total_steps)
    run.eval_every = max(1, math.ceil(run.steps_per_epoch / training.evals_per_epoch))


def resume_or_start(run: Run) -> None:
    """Continue from the job's checkpoint if one fits its settings, else start at step 0."""
    import torch

    job, ranks = run.job, run.ranks
    run.checkpointer = Checkpointer(Path(job.out_dir), job_key(job, ranks.world_size),
                                    run.training.checkpoint_minutes * 60, writer=ranks.is_main)
    run.state, run.best_state = LoopState(micro_batch_size=run.training.batch_size), None
    # Rank 0 first: it discards a checkpoint of other settings before the others look.
    saved = run.checkpointer.load(mmap=ranks.distributed) if ranks.is_main and not run.dev_only else None
    ranks.barrier()
    if not ranks.is_main and not run.dev_only:
        saved = run.checkpointer.load(mmap=True)
    if saved is not None:
        ranks.load_trainable(run.core, saved["trainable"])
        ranks.load_optimizer_state(run.core, run.optimizer, saved["optimizer"])
        run.scheduler.load_state_dict(saved["scheduler"])
        torch_rng = saved["torch_rng"]
        restore_torch_rng_states(torch, run.device, torch_rng[ranks.rank] if isinstance(torch_rng, list) else torch_rng)
        run.rng.bit_generator.state = saved["numpy_rng"]
        if run.method.load_state is not None:
            run.method.load_state(run.core.backbone, saved["method_state"])
        run.state, run.best_state = saved["loop"], saved["best_state"] if ranks.is_main else None
        state = run.state
        run.say(f"[seqpeft] resuming from step {state.step} (epoch {state.epoch + 1}, batch {state.batch_in_epoch})")
    else:
        processes = f" x {ranks.world_size} processes ({ranks.mode})" if ranks.distributed else ""
        run.say(f"[seqpeft] start {job.task}/{job.model}/{job.method}/{job.partition}: trainable {run.trainable:,} of "
                f"{run.total:,} parameters, {len(run.splits['train'].data)} train sequences, {run.total_steps} steps on "
                f"{run.device}{processes}")


def save_checkpoint(run: Run) -> None:
    """Every rank takes part (gathered RNG states and sharded weights); rank 0 writes."""
    import torch

    ranks, core = run.ranks, run.core
    run.checkpointer.save({
        "trainable": ranks.trainable_state(core), "optimizer": ranks.optimizer_state(core, run.optimizer),
        "scheduler": run.scheduler.state_dict(), "torch_rng": ranks.gather(torch_rng_states(torch, run.device)),
        "numpy_rng": rng_state(run.rng), "loop": run.state, "best_state": run.best_state,
        "method_state": run.method.save_state(core.backbone) if run.method.save_state is not None else None,
    })


def train_epoch(run: Run, term: TermFlag) -> None:
    """The rest of the current epoch (all of it, unless resumed mid-epoch), or until early stop.

    A resumed epoch redraws the batch order from the RNG state at the epoch's start, so it
    continues with the very batches the interrupted run would have trained on.
    """
    state, training = run.state, run.training
    if state.batch_in_epoch == 0:
        state.epoch_rng_state = rng_state(run.rng)
    else:
        run.rng.bit_generator.state = copy.deepcopy(state.epoch_rng_state)
    batches = length_bucketed_batches(run.splits["train"].data.lengths, training.batch_size, training.bucket_size, run.rng)
    epoch_bar = progress.bar(len(batches), f"epoch {state.epoch + 1}", initial=state.batch_in_epoch)
    while state.batch_in_epoch < len(batches):
        stop_votes, due_votes = train_step(run, batches[state.batch_in_epoch], term)
        epoch_bar.update()
        evaluated = state.step % run.eval_every == 0 or state.batch_in_epoch == len(batches)
        if evaluated:
            evaluate_dev(run)
        if state.batch_in_epoch == len(batches):
            state.epoch, state.batch_in_epoch = state.epoch + 1, 0
        if stop_votes:
            if run.dev_only:
                raise Preempted(f"SIGTERM at step {state.step} of a dev-only run (nothing saved)")
            save_checkpoint(run)
            raise Preempted(f"SIGTERM at step {state.step}: checkpoint saved to {run.checkpointer.path}; rerun to resume")
        if not run.dev_only and (evaluated or due_votes):
            save_checkpoint(run)
        if state.finished or state.batch_in_epoch == 0:
            break  # early stop, or the epoch is over: the next one draws a new batch order
    epoch_bar.close()


def train_step(run: Run, indices: np.ndarray, term: TermFlag) -> tuple[float, float]:
    """One optimizer step on one batch; returns the (SIGTERM, checkpoint due) votes of all ranks."""
    import torch

    state, ranks, method = run.state, run.ranks, run.method
    started = time.perf_counter()
    run.loss_model.train()
    loss = step_with_oom_retry(torch, run.loss_model, method, run.splits["train"], indices, run.pad_id, run.max_length,
                                run.device, state, run.objective, ranks, run.core)
    torch.nn.utils.clip_grad_norm_(run.trainable_params, run.training.max_grad_norm)
    run.optimizer.step()
    run.scheduler.step()
    state.step += 1
    state.batch_in_epoch += 1
    if method.after_optimizer_step is not None:
        method.after_optimizer_step(run.core.backbone, state.step)
    run.optimizer.zero_grad(set_to_none=True)
    # One all-reduce: the batch loss, and whether any rank got SIGTERM or rank 0's
    # checkpoint clock ran out, so that every rank stops and saves at the same step.
    loss, stop_votes, due_votes = ranks.sum([loss, float(term.raised), float(ranks.is_main and run.checkpointer.due())])
    state.running_loss += loss
    state.running_count += 1
    state.samples += len(indices)
    state.train_seconds += time.perf_counter() - started
    return stop_votes, due_votes


def evaluate_dev(run: Run) -> None:
    """Score dev, record it in the history, keep the best weights, count patience down."""
    state, training = run.state, run.training
    dev = evaluate(run.objective, run.core, run.splits["dev"], run.pad_id, run.max_length, training.eval_batch_size,
                   run.device, run.ranks)
    state.history.append({
        "step": state.step, "epoch": round(state.step / run.steps_per_epoch, 4),
        "wall_seconds": round(state.train_seconds, 4),
        "train_loss": state.running_loss / max(state.running_count, 1), "dev_loss": dev["loss"],
        **{f"dev_{metric}": dev[metric] for metric in run.kind.history_metrics}})
    state.running_loss, state.running_count = 0.0, 0
    run.say(f"[seqpeft] step {state.step} epoch {state.history[-1]['epoch']:.2f}: "
            f"dev loss {dev['loss']:.4f} {run.kind.score} {dev[run.kind.score]:.4f}", flush=True)
    score = selection_score(dev, training.select_on)  # MCC (or the objective's score), or minus the loss
    if "step" not in state.best or score > selection_score(state.best, training.select_on):
        state.best = {**dev, "step": state.step, "epoch": state.epoch + 1}
        run.best_state = run.ranks.trainable_state(run.core)
        state.since_best = 0
    else:
        state.since_best += 1
        if state.since_best >= training.patience:
            state.finished = True
    if run.on_evaluate is not None:
        run.on_evaluate(len(state.history), dev)


def dev_result(run: Run) -> dict:
    """A dev-only run's outcome (a tuning trial): best dev metrics and the history; nothing written."""
    best = run.state.best
    return {"dev": dev_best(run), "best_epoch": int(best.get("epoch", 0)), "best_step": int(best.get("step", 0)),
            "steps": run.state.step, "history": run.state.history, "training": asdict(run.training)}


def finish(run: Run, tuned: dict | None) -> dict:
    """Restore the best weights, score test, and write artifacts, history and metrics (rank 0)."""
    job, ranks, state = run.job, run.ranks, run.state
    if "step" in state.best:  # a best evaluation was recorded (the same on every rank)
        ranks.load_trainable(run.core, run.best_state)
    test, predictions = evaluate_with_predictions(run.objective, run.core, run.splits["test"], run.pad_id,
                                                  run.max_length, run.training.eval_batch_size, run.device, ranks)
    metrics = run_metrics(run, test, tuned)
    saved_model = run.core
    if ranks.shards_parameters:
        # save_pretrained needs whole tensors: rank 0 rebuilds the model unsharded on the CPU.
        weights = ranks.trainable_state(run.core)
        if ranks.is_main:
            saved_model = build_model(job.model_dir, job.model_spec, job.method, job.method_spec, run.num_labels,
                                      run.per_residue, run.total_steps, job.model)[0]
            run.objective.attach(saved_model)
            saved_model.load_state_dict(weights, strict=False)
    if ranks.is_main:
        out_dir = Path(job.out_dir)
        save_artifacts(saved_model, run.method.uses_peft, run.loaded.tokenizer, out_dir / "artifacts", {
            **base_model_reference(Path(job.model_dir), out_dir / "artifacts", job.model_spec),
            "model_spec": job.model_spec, "model": job.model,
            "method": job.method, "method_spec": job.method_spec, "task": job.task, "task_kind": run.cache.kind,
            "num_labels": run.num_labels, "label_names": run.cache.meta.get("label_names"), "pooling": run.core.pooling,
            "alphabet": run.cache.meta.get("alphabet"), "fitted": run.cache.meta.get("fitted"),
            "max_length": run.max_length, "per_residue": run.per_residue, "dsp": run.cache.meta.get("dsp"),
            **run.kind.settings(job.task_spec), **head_description(run.core, run.loaded, job.model_spec),
        }, trainable_only=run.method.saves_trainable)
        write_history(out_dir / "history.csv", state.history, run.kind.history_metrics)
        write_test_predictions(out_dir / "predictions_test.parquet", run.kind, run.splits["test"], predictions)
        write_json_atomic(out_dir / "metrics.json", metrics)  # last: the run's completion marker
        run.checkpointer.clear()
    run.say(f"[seqpeft] done {job.task}/{job.model}/{job.method}/{job.partition}: test {run.kind.score} "
            f"{test[run.kind.score]:.4f} "
            f"(best epoch {metrics['best_epoch']}, {state.train_seconds:.1f} s)")
    return metrics
