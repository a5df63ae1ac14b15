"""What every workflow script does around its one library call.

``logged(snakemake)`` sends stdout and stderr, including output of C
extensions and subprocesses, to the rule's log file, and turns a ``SeqpeftInputError`` into one
line on the terminal instead of a traceback. Any failure exits with status 1; the log holds the
details.

A rule that Snakemake retries (``retries:``; the profile's ``retries``) and that declares the
resource ``attempt`` is not retried after an error that retrying cannot fix (``NOT_RETRYABLE``:
bad input, a wrong option, a programming error, rather than memory, time, preemption or I/O): the
failed attempt leaves a ``<log>.not-retryable`` file, and a later attempt of the same Snakemake
run finds it and fails at once with that error; a first attempt (a new Snakemake run) removes it.
"""

from __future__ import annotations

import os
import sys
import time
import traceback
from contextlib import contextmanager
from datetime import datetime, timezone
from pathlib import Path


# Errors that the same job with more memory, more time or another node would meet again.
NOT_RETRYABLE = (TypeError, ValueError, KeyError, AttributeError, IndexError, NotImplementedError, ImportError,
                 AssertionError)


def not_retryable(error: BaseException) -> bool:
    from seqpeft.util.errors import SeqpeftInputError

    return isinstance(error, (SeqpeftInputError, *NOT_RETRYABLE))


def _refuse_retry(snakemake, log_path: Path, terminal) -> None:
    """A later attempt after a not-retryable failure exits at once; a first attempt clears the mark."""
    attempt = getattr(snakemake.resources, "attempt", None)
    marker = log_path.with_name(log_path.name + ".not-retryable")
    if attempt is None or not marker.is_file():
        return
    if int(attempt) <= 1:
        marker.unlink(missing_ok=True)
        return
    message = marker.read_text().strip()
    with open(log_path, "a") as log:
        print(f"[seqpeft] attempt {attempt} not run: the first attempt failed with an error that retrying cannot fix: "
              f"{message}", file=log)
    print(f"{message} (not retried: attempt {attempt} would fail the same way)", file=terminal)
    terminal.flush()
    os._exit(1)


@contextmanager
def logged(snakemake, mode: str = "w"):
    log_path = Path(snakemake.log[0])
    log_path.parent.mkdir(parents=True, exist_ok=True)
    terminal = os.fdopen(os.dup(2), "w", buffering=1)
    _refuse_retry(snakemake, log_path, terminal)
    with open(log_path, mode, buffering=1) as log:
        sys.stdout.flush()
        sys.stderr.flush()
        os.dup2(log.fileno(), 1)
        os.dup2(log.fileno(), 2)
        sys.stdout = sys.stderr = log
        wildcards = ", ".join(f"{key}={value}" for key, value in snakemake.wildcards.items())
        job = f"{snakemake.rule} ({wildcards})" if wildcards else snakemake.rule
        stamp = datetime.now(timezone.utc).isoformat(timespec="seconds")
        started = time.monotonic()
        print(f"[seqpeft] {job} started {stamp}")
        try:
            yield
        except Exception as error:  # noqa: BLE001 - report every failure in the log, exit 1
            from seqpeft.util.errors import SeqpeftInputError

            traceback.print_exc()
            if isinstance(error, SeqpeftInputError):
                line = f"error in {job}: {error}"
            else:
                line = f"error in {job}: {type(error).__name__}: {error} (traceback in {log_path})"
            print(line, file=terminal)
            if not_retryable(error) and getattr(snakemake.resources, "attempt", None) is not None:
                log_path.with_name(log_path.name + ".not-retryable").write_text(line + "\n")
            log.flush()
            terminal.flush()
            os._exit(1)
        print(f"[seqpeft] finished {datetime.now(timezone.utc).isoformat(timespec='seconds')}")
        try:
            print(done_line(snakemake, started), file=terminal)
            terminal.flush()
        except Exception as error:  # noqa: BLE001 - the job is done; a summary line must not fail it
            print(f"[seqpeft] no summary line: {type(error).__name__}: {error}")


def done_line(snakemake, started: float) -> str:
    """The terminal's one line for a finished job: rule, wildcards, its key figure, wall time."""
    import json
    import math
    import time

    where = "/".join(str(value) for _, value in snakemake.wildcards.items())
    figure = ""
    metrics = snakemake.output.get("metrics") if hasattr(snakemake.output, "get") else None
    if metrics and Path(metrics).is_file():
        try:
            written = json.loads(Path(metrics).read_text())
            score = written.get("score", "mcc")  # the task kind's headline metric
            value = written.get("test", {}).get(score)
            if isinstance(value, (int, float)) and not math.isnan(value):
                figure = f": test {score.upper() if score == 'mcc' else score} {value:.3f}"
        except (OSError, ValueError):
            pass
    return f"[seqpeft] done {snakemake.rule}{' ' + where if where else ''}{figure} ({time.monotonic() - started:.0f} s)"


def finetune_job(snakemake, out_dir: Path, **extra):
    """The ``seqpeft.config.settings.FinetuneJob`` of a fine-tuning or tuning-trial job: its wildcards, its
    params.spec (task, model, method, training), its tokenized cache and model directory, its threads."""
    from seqpeft.config.settings import FinetuneJob

    wildcards, spec = snakemake.wildcards, snakemake.params.spec
    return FinetuneJob(
        task=wildcards.task,
        model=wildcards.model,
        method=wildcards.method,
        partition=wildcards.partition,
        task_spec=dict(spec["task"]),
        model_spec=dict(spec["model"]),
        method_spec=dict(spec["method"]),
        training=dict(spec["training"]),
        cache_path=Path(snakemake.input.cache),
        model_dir=Path(snakemake.input.model),
        out_dir=Path(out_dir),
        threads=int(snakemake.threads),
        **extra,
    )
