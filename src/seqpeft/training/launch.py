"""Run one fine-tuning job: in this process, or on several worker processes (ranks).

A job whose world size (``seqpeft.config.settings.world_size``) is above one starts one worker per rank
(``python -m seqpeft.training.launch JOB.json``) and waits for them; each runs ``seqpeft.training.loop.train``.

Why not ``torchrun`` as the launcher: its agent answers SIGTERM by killing the workers a fixed
``--shutdown-timeout`` (30 s) later, while a preempted job needs every rank to finish its step
and rank 0 to save a checkpoint, however long that takes. The workers still accept torchrun's
environment (RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR/PORT), so
``torchrun --standalone --nproc-per-node N -m seqpeft.training.launch JOB.json`` runs them too.
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
from dataclasses import replace
from pathlib import Path
from typing import Callable

from seqpeft.training.checkpoint import Preempted
from seqpeft.training.distributed import RENDEZVOUS_ENV
from seqpeft.util.errors import SeqpeftInputError
from seqpeft.training.loop import train
from seqpeft.methods.registry import resolve_method
from seqpeft.config.settings import FinetuneJob, TrainingConfig, setup_problem, world_size

PREEMPTED_EXIT = 75  # EX_TEMPFAIL: the rank stopped on SIGTERM after the checkpoint was saved
FAILED_RANK_GRACE_SECONDS = 60  # then the ranks still waiting for a dead peer are killed
OUTCOME_ENV = "SEQPEFT_OUTCOME_DIR"


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
    and waits (``launch``); each runs ``train``.
    """
    training = TrainingConfig.from_dict(job.training)
    world = world_size(int(training.processes), int(job.gpus), training.device)
    if world > 1 and (dev_only or on_evaluate is not None):
        # A tuning trial reports each evaluation to its study from this process: it trains alone,
        # to the same dev metrics as its processes would (the same global batches and updates).
        job = replace(job, training={**job.training, "processes": 1}, gpus=min(int(job.gpus), 1))
        world = 1
    if world > 1:
        method, _ = resolve_method(job.method, job.method_spec)
        problem = setup_problem(world, training.batch_size, training.distributed, method, job.task_spec["kind"])
        if problem:  # before starting processes that would all fail the same way
            raise SeqpeftInputError(None, f"training.{problem[0]}: {problem[1]}", fix=problem[2])
        return launch(job, world)
    return train(job, on_evaluate, dev_only)


# ---- the job process: start the ranks, pass signals on, report their outcome ----


def launch(job, world: int) -> dict:
    """Run ``job`` on ``world`` worker processes; return rank 0's metrics.

    stdout/stderr of the workers are this process's (the job log). SIGTERM is passed on to every
    rank, which then stops after its current step, rank 0 saving a checkpoint; this raises
    ``Preempted`` once they have all exited. A rank that fails gives its peers
    ``FAILED_RANK_GRACE_SECONDS`` to notice, after which the rest are killed.
    """
    training = TrainingConfig.from_dict(job.training)
    threads = max(1, int(job.threads) // world)
    src = str(Path(__file__).resolve().parents[2])
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
                workers.append(subprocess.Popen([sys.executable, "-m", "seqpeft.training.launch", str(job_file)], env=rank_env))
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


def main(argv: list[str] | None = None) -> int:
    """Worker entry point: ``python -m seqpeft.training.launch JOB.json``; exits 0, 75 (preempted) or 1."""
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
