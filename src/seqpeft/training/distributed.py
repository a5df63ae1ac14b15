"""Data-parallel fine-tuning: the ranks of one job and what they share.

A job's world size is ``training.processes`` (CPU processes, gloo) or, when its model size asks
for more than one GPU, that GPU count (one process per GPU, NCCL); ``seqpeft.training.launch`` starts
the ranks. Every rank builds the same model and draws the same length-bucketed global batches as
a single process would; it trains on rows ``rank::world_size`` of each batch, with the loss
scaled so that the averaged gradient is the single-process gradient of the whole batch.
Evaluation is sharded the same way and the predictions are gathered, so every rank computes the
same metrics and takes the same early-stopping decision. Only rank 0 writes (metrics, history,
artifacts, checkpoints). This module imports no torch at import time.
"""

from __future__ import annotations

import functools
import os
from contextlib import nullcontext
from dataclasses import dataclass
from typing import Any

import numpy as np

from seqpeft.util.errors import SeqpeftInputError

RENDEZVOUS_ENV = "SEQPEFT_RENDEZVOUS"


@dataclass
class Ranks:
    """This process's place in the job and the few collectives training needs (no-ops alone)."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    mode: str = "single"  # single, ddp or fsdp
    device: Any = None  # the rank's device in a multi-process job

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1

    @property
    def shards_parameters(self) -> bool:
        return self.mode == "fsdp"

    # ---- collectives ----

    def sum(self, values: list[float]) -> list[float]:
        """Element-wise sum over ranks (one all-reduce); the values themselves when alone."""
        if not self.distributed:
            return list(values)
        import torch
        import torch.distributed as dist

        tensor = torch.tensor([float(v) for v in values], dtype=torch.float64, device=self.device)
        dist.all_reduce(tensor)
        return tensor.tolist()

    def gather(self, value: Any) -> list:
        """Every rank's ``value`` (picklable), in rank order, on every rank."""
        if not self.distributed:
            return [value]
        import torch.distributed as dist

        values: list = [None] * self.world_size
        dist.all_gather_object(values, value)
        return values

    def barrier(self) -> None:
        if self.distributed:
            import torch.distributed as dist

            dist.barrier()

    # ---- the rows each rank works on ----

    def batch_rows(self, indices: np.ndarray) -> np.ndarray:
        """This rank's rows of a global batch. Strided, because a batch is sorted by length: every
        rank gets long and short sequences alike, and so about the same padding and time."""
        return indices[self.rank::self.world_size]

    def micro_batches(self, batch_size: int, micro_batch_size: int) -> int:
        """Micro-batches per rank and step, the same on every rank (sharded models need every rank
        to run the same number of forward passes)."""
        rows = -(-batch_size // self.world_size)
        return max(1, -(-rows // micro_batch_size))

    def eval_rows(self, count: int) -> np.ndarray:
        """This rank's rows of an evaluated split: ``rank::world_size``, padded with row 0 to the
        same length on every rank (equal forward passes); the duplicates are dropped when gathered."""
        rows = np.arange(count)[self.rank::self.world_size]
        size = -(-count // self.world_size)
        return np.concatenate([rows, np.zeros(size - len(rows), dtype=rows.dtype)])

    def gather_rows(self, rows: np.ndarray, predictions: dict[str, np.ndarray], count: int) -> dict[str, np.ndarray]:
        """Per-sequence predictions of every rank's rows, merged into split order (first copy of each row)."""
        if not self.distributed:
            return predictions
        parts = self.gather((rows, predictions))
        all_rows = np.concatenate([part_rows for part_rows, _ in parts])
        unique, first = np.unique(all_rows, return_index=True)
        if len(unique) != count:
            raise RuntimeError(f"gathered predictions cover {len(unique)} of {count} sequences")
        return {key: np.concatenate([part[key] for _, part in parts])[first] for key in parts[0][1]}

    # ---- the model across ranks ----

    def parallelize(self, model, loss_model):
        """What training calls: ``loss_model`` (which computes the loss of ``model``) wrapped in
        DDP, or around ``model`` sharded in place (FSDP; evaluation calls the sharded ``model``)."""
        if not self.distributed:
            return loss_model
        if self.mode == "fsdp":
            _shard(model, self.device, self.world_size)
            return loss_model
        from torch.nn.parallel import DistributedDataParallel

        # find_unused_parameters: some backbones carry trainable modules the classifier never
        # calls (ESM's contact head); without it DDP waits forever for their gradients.
        return DistributedDataParallel(loss_model, device_ids=[self.device.index] if self.device.type == "cuda" else None,
                                       find_unused_parameters=True)

    def reshard(self, model) -> None:
        """After forward passes without backward (evaluation): FSDP keeps the root's parameters
        gathered until a backward; shard them again so every parameter is in its training form."""
        if self.shards_parameters:
            _, FSDPModule = _fsdp()
            for module in model.modules():
                if isinstance(module, FSDPModule):
                    module.reshard()

    def no_sync(self, module, last: bool):
        """Accumulate gradients locally for all but the last micro-batch of a step (DDP)."""
        if self.distributed and self.mode == "ddp" and not last:
            return module.no_sync()
        return nullcontext()

    def trainable_state(self, model) -> dict | None:
        """Full trainable tensors (names as in a single-process model) on rank 0, None elsewhere."""
        if not self.distributed:
            # on the host: a copy on the GPU would add a model's worth (full fine-tuning) to the peak memory measured
            return {name: p.detach().to("cpu", copy=True) for name, p in model.named_parameters() if p.requires_grad}
        state = {}
        for name, param in model.named_parameters():
            if not param.requires_grad:
                continue
            full = param.full_tensor() if hasattr(param, "full_tensor") else param  # a collective for sharded parameters
            if self.is_main:
                state[name] = full.detach().to("cpu", copy=True)
        return state if self.is_main else None

    def load_trainable(self, model, state: dict | None) -> None:
        """Set the trainable parameters from rank 0's ``state`` on every rank."""
        import torch

        if not self.distributed:
            model.load_state_dict(state, strict=False)
            return
        if self.shards_parameters:
            from torch.distributed.checkpoint.state_dict import StateDictOptions, set_model_state_dict

            set_model_state_dict(model, state if self.is_main else {}, options=StateDictOptions(
                full_state_dict=True, broadcast_from_rank0=True, strict=False))
            return
        import torch.distributed as dist

        if self.is_main:
            model.load_state_dict(state, strict=False)
        with torch.no_grad():
            for param in model.parameters():
                if param.requires_grad:
                    dist.broadcast(param.data, src=0)

    def optimizer_state(self, model, optimizer) -> dict | None:
        if not self.shards_parameters:
            return optimizer.state_dict() if self.is_main else None
        from torch.distributed.checkpoint.state_dict import StateDictOptions, get_optimizer_state_dict

        state = get_optimizer_state_dict(model, optimizer, options=StateDictOptions(full_state_dict=True, cpu_offload=True))
        return state if self.is_main else None

    def load_optimizer_state(self, model, optimizer, state: dict) -> None:
        if not self.shards_parameters:
            optimizer.load_state_dict(state)
            return
        from torch.distributed.checkpoint.state_dict import StateDictOptions, set_optimizer_state_dict

        set_optimizer_state_dict(model, optimizer, state, options=StateDictOptions(full_state_dict=True))


SINGLE = Ranks()


def _fsdp():
    """FSDP2's ``fully_shard`` and ``FSDPModule`` (public since torch 2.6)."""
    try:
        from torch.distributed.fsdp import FSDPModule, fully_shard
    except ImportError:
        from torch.distributed._composable.fsdp import FSDPModule, fully_shard
    return fully_shard, FSDPModule


def _shard(model, device, world_size: int) -> None:
    """FSDP2: each transformer block (the model's ``_no_split_modules``) is a unit, then the rest.
    ``fully_shard`` moves each unit to the mesh's device as it shards it; the mesh is the job's
    device type (FSDP's default is the accelerator's, even for a CPU job on a GPU node)."""
    from torch.distributed.device_mesh import init_device_mesh

    fully_shard, _ = _fsdp()
    fully_shard = functools.partial(fully_shard, mesh=init_device_mesh(device.type, (world_size,)))
    block_names = set()
    for module in model.modules():
        block_names.update(getattr(module, "_no_split_modules", None) or ())
    blocks = [module for module in model.modules() if type(module).__name__ in block_names]
    for block in blocks:
        fully_shard(block)
    fully_shard(model)


def join(world: int, gpus: int, mode: str) -> Ranks:
    """Join the job's process group from the environment the launcher (or torchrun) set."""
    import torch
    import torch.distributed as dist

    rank, size = int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"])
    local_rank = int(os.environ.get("LOCAL_RANK", rank))
    if size != world:
        raise SeqpeftInputError(None, f"started with WORLD_SIZE={size} but the job's settings give {world} processes.",
                                fix="start as many processes as training.processes or the GPUs of the job.")
    if gpus > 1:
        if torch.cuda.device_count() <= local_rank:
            raise SeqpeftInputError(None, f"the job asks for {gpus} GPUs but {torch.cuda.device_count()} are visible.",
                                    fix="run it on a node with that many GPUs, or lower resources.sizes.<size>.gpu.")
        torch.cuda.set_device(local_rank)
        from seqpeft.training.assemble import require_cuda  # the GPU must be one this torch has kernels for

        require_cuda(torch, f"the job asks for {gpus} GPUs")
        device, backend = torch.device("cuda", local_rank), "nccl"
    else:
        device, backend = torch.device("cpu"), "gloo"
    dist.init_process_group(backend, init_method=os.environ.get(RENDEZVOUS_ENV, "env://"), rank=rank, world_size=size,
                            device_id=device if device.type == "cuda" else None)
    return Ranks(rank, size, local_rank, mode, device)
