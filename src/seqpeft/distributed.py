"""Data-parallel fine-tuning: one job, several processes (ranks), one result.

A job's world size is ``training.processes`` (CPU processes, gloo) or, when its model size asks
for more than one GPU, that GPU count (one process per GPU, NCCL). Above one, the job process
starts one worker per rank (``python -m seqpeft.distributed JOB.json``) and waits for them.
Every rank builds the same model and draws the same length-bucketed global batches as a single
process would; it trains on rows ``rank::world_size`` of each batch, with the loss scaled so that
the averaged gradient is the single-process gradient of the whole batch. Evaluation is sharded
the same way and the predictions are gathered, so every rank computes the same metrics and takes
the same early-stopping decision. Only rank 0 writes (metrics, history, artifacts, checkpoints).

Why not ``torchrun`` as the launcher: its agent answers SIGTERM by killing the workers a fixed
``--shutdown-timeout`` (30 s) later, while a preempted job needs every rank to finish its step
and rank 0 to save a checkpoint, however long that takes. The workers still accept torchrun's
environment (RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR/PORT), so
``torchrun --standalone --nproc-per-node N -m seqpeft.distributed JOB.json`` runs them too.
This module imports no torch at import time (``seqpeft.config`` reads its names).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
import traceback
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from seqpeft.errors import SeqpeftInputError

MODES = ("ddp", "fsdp")
PREEMPTED_EXIT = 75  # EX_TEMPFAIL: the rank stopped on SIGTERM after the checkpoint was saved
FAILED_RANK_GRACE_SECONDS = 60  # then the ranks still waiting for a dead peer are killed
RENDEZVOUS_ENV = "SEQPEFT_RENDEZVOUS"
OUTCOME_ENV = "SEQPEFT_OUTCOME_DIR"


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
            _shard(model)
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
            return {name: p.detach().clone() for name, p in model.named_parameters() if p.requires_grad}
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


def _shard(model) -> None:
    """FSDP2: each transformer block (the model's ``_no_split_modules``) is a unit, then the rest."""
    fully_shard, _ = _fsdp()
    block_names = set()
    for module in model.modules():
        block_names.update(getattr(module, "_no_split_modules", None) or ())
    blocks = [module for module in model.modules() if type(module).__name__ in block_names]
    for block in blocks:
        fully_shard(block)
    fully_shard(model)


def sharding_conflict(method, task_kind: str) -> str | None:
    """Why a method or task cannot train with sharded parameters (FSDP), or None."""
    if method.after_optimizer_step is not None or method.extra_loss is not None or method.save_state is not None:
        return f"method {method.name!r} reads and edits whole parameters between steps (rank budget, regulariser)"
    if method.load_kwargs is not None:
        return f"method {method.name!r} loads a quantized backbone"
    if task_kind == "signal_peptide":
        return "the signal-peptide CRF runs outside the sharded forward pass"
    return None


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


# ---- the job process: start the ranks, pass signals on, report their outcome ----


def launch(job, world: int) -> dict:
    """Run ``job`` on ``world`` worker processes; return rank 0's metrics.

    stdout/stderr of the workers are this process's (the job log). SIGTERM is passed on to every
    rank, which then stops after its current step, rank 0 saving a checkpoint; this raises
    ``Preempted`` once they have all exited. A rank that fails gives its peers
    ``FAILED_RANK_GRACE_SECONDS`` to notice, after which the rest are killed.
    """
    from seqpeft.train import Preempted, TrainingConfig

    training = TrainingConfig.from_dict(job.training)
    threads = max(1, int(job.threads) // world)
    src = str(Path(__file__).resolve().parents[1])
    with tempfile.TemporaryDirectory(prefix="seqpeft-ranks-") as tmp:
        job_file = Path(tmp) / "job.json"
        job_file.write_text(json.dumps(job.to_dict()))
        env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [src, os.environ.get("PYTHONPATH")])),
               "WORLD_SIZE": str(world), RENDEZVOUS_ENV: f"file://{tmp}/rendezvous", OUTCOME_ENV: tmp,
               "OMP_NUM_THREADS": str(threads)}
        print(f"[seqpeft] {job.task}/{job.model}/{job.method}/{job.partition}: {world} processes "
              f"({training.distributed}, {'nccl' if job.gpus > 1 else 'gloo'}), {threads} thread(s) each", flush=True)
        workers = []
        received: list[int] = []

        def forward(signum, frame):
            received.append(signum)
            for worker in workers:
                if worker.poll() is None:
                    worker.send_signal(signal.SIGTERM)

        previous = signal.signal(signal.SIGTERM, forward) if threading.current_thread() is threading.main_thread() else None
        try:
            for rank in range(world):
                rank_env = {**env, "RANK": str(rank), "LOCAL_RANK": str(rank)}
                if rank:
                    rank_env["SEQPEFT_PROGRESS"] = "0"  # one progress bar, rank 0's
                workers.append(subprocess.Popen([sys.executable, "-m", "seqpeft.distributed", str(job_file)], env=rank_env))
            if received:  # SIGTERM while the ranks were being started: pass it on to the later ones too
                forward(signal.SIGTERM, None)
            codes = _wait(workers)
        finally:
            for worker in workers:
                if worker.poll() is None:
                    worker.kill()
                    worker.wait()
            if previous is not None:
                signal.signal(signal.SIGTERM, previous)
        outcomes = [_read_outcome(Path(tmp), rank) for rank in range(world)]
    if all(code == 0 for code in codes):
        return json.loads((Path(job.out_dir) / "metrics.json").read_text())
    for outcome in outcomes:
        if outcome.get("kind") == "input":
            raise SeqpeftInputError(**outcome["error"])
    if received or PREEMPTED_EXIT in codes:
        message = next((o["message"] for o in outcomes if o.get("kind") == "preempted"), None)
        raise Preempted(message or f"SIGTERM before the {world} ranks reached a training step: nothing new was saved; "
                        "rerun to resume from the last checkpoint, if any")
    failed = [(rank, code) for rank, code in enumerate(codes) if code not in (0, PREEMPTED_EXIT)]
    rank, code = failed[0] if failed else (0, codes[0])
    message = next((o["message"] for o in outcomes if o.get("kind") == "error"), f"exit code {code}")
    raise RuntimeError(f"rank {rank} of {world} failed: {message} (every rank's traceback is in the log above)")


def _wait(workers: list) -> list[int]:
    """Exit codes of all workers. A rank that fails (not 0, not preempted) leaves its peers stuck
    in a collective or failing on their own: those still running after the grace period are killed."""
    failed_at = None
    while True:
        codes = [worker.poll() for worker in workers]
        if all(code is not None for code in codes):
            return codes
        if failed_at is None and any(code not in (None, 0, PREEMPTED_EXIT) for code in codes):
            failed_at = time.monotonic()
        if failed_at is not None and time.monotonic() - failed_at > FAILED_RANK_GRACE_SECONDS:
            for worker in workers:
                if worker.poll() is None:
                    worker.kill()
        time.sleep(0.1)


def _read_outcome(directory: Path, rank: int) -> dict:
    path = directory / f"rank{rank}.json"
    return json.loads(path.read_text()) if path.is_file() else {}


def _write_outcome(rank: int, outcome: dict) -> None:
    directory = os.environ.get(OUTCOME_ENV)
    if directory:
        (Path(directory) / f"rank{rank}.json").write_text(json.dumps(outcome, default=str))


# ---- a worker: one rank ----


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
        device, backend = torch.device("cuda", local_rank), "nccl"
    else:
        device, backend = torch.device("cpu"), "gloo"
    dist.init_process_group(backend, init_method=os.environ.get(RENDEZVOUS_ENV, "env://"), rank=rank, world_size=size,
                            device_id=device if device.type == "cuda" else None)
    return Ranks(rank, size, local_rank, mode, device)


def main(argv: list[str] | None = None) -> int:
    """Worker entry point: ``python -m seqpeft.distributed JOB.json``; exits 0, 75 (preempted) or 1."""
    from seqpeft.train import FinetuneJob, Preempted, train

    argv = sys.argv[1:] if argv is None else argv
    job = FinetuneJob.from_dict(json.loads(Path(argv[0]).read_text()))
    rank = int(os.environ.get("RANK", 0))
    try:
        train(job)
    except Preempted as error:
        _write_outcome(rank, {"kind": "preempted", "message": str(error)})
        return PREEMPTED_EXIT
    except SeqpeftInputError as error:
        _write_outcome(rank, {"kind": "input", "error": {"path": error.path, "problem": error.problem, "fix": error.fix,
                                                         "line": error.line, "record": error.record}})
        if rank == 0:
            traceback.print_exc()
        return 1
    except BaseException as error:  # noqa: BLE001 - every failure is reported to the launcher
        traceback.print_exc()
        _write_outcome(rank, {"kind": "error", "message": f"{type(error).__name__}: {error}"})
        return 1
    import torch.distributed as dist

    if dist.is_initialized():
        dist.destroy_process_group()
    return 0


if __name__ == "__main__":
    code = main()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)  # no interpreter teardown: a failed rank's process group may otherwise block it
