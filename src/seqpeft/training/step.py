"""One optimizer step's forward and backward passes: this rank's share of the batch as
micro-batches, with the loss normalised as if one process computed the whole batch, and the
micro-batch halved when a CUDA device runs out of memory."""

from __future__ import annotations

import numpy as np

from seqpeft.core.batching import Split, collate
from seqpeft.util.errors import SeqpeftInputError


class OutOfMemoryAtOne(SeqpeftInputError):
    """Out of GPU memory with one sequence per micro-batch: only a change of settings or GPU helps."""


def is_out_of_memory(torch, error: BaseException) -> bool:
    return isinstance(error, torch.cuda.OutOfMemoryError)


def step_with_oom_retry(torch, model, method, split, indices, pad_id, max_length, device, state,
                         objective, ranks, core) -> float:
    """One optimizer step's forward/backward; on CUDA OOM halve the micro-batch and try again.

    The effective batch stays the same (more micro-batches are accumulated); only at micro-batch
    1 does the job fail, with a message that says what to change. In a multi-process job the
    other ranks are already waiting in the step's all-reduce, so there OOM fails the job.
    """
    while True:
        try:
            return training_step(torch, model, method, split, indices, pad_id, max_length, device, state.micro_batch_size,
                                  objective, ranks, core)
        except Exception as error:  # noqa: BLE001 - only OOM is handled, everything else re-raised
            if not is_out_of_memory(torch, error):
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
                raise OutOfMemoryAtOne(None, f"out of GPU memory at micro-batch 1 (step {state.step + 1}).",
                                        fix="use a GPU with more memory, a smaller max_length, or a parameter-efficient method / QLoRA.") from error
            state.micro_batch_size = max(1, state.micro_batch_size // 2)
            state.oom_events.append({"step": state.step + 1, "micro_batch_size": state.micro_batch_size})
            print(f"[seqpeft] CUDA out of memory at step {state.step + 1}: micro-batch now {state.micro_batch_size}")


def training_step(torch, loss_model, method, split: Split, indices, pad_id, max_length, device, micro_batch_size,
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
