"""A rehearsal of one fine-tuning job: a few optimizer steps, one dev evaluation, save and reload.

``seqpeft rehearse`` runs one of these per fine-tuning job of a config, through the workflow's
``rehearse_job`` rule (the finetune rule's inputs, GPUs, memory and profile), so that a researcher
learns in minutes whether every job of a benchmark starts, how long each will take and how much
memory it needs, before the benchmark spends GPU-hours.

A rehearsal uses the real model, method, tokenized cache and training settings, with three
differences: it trains ``steps`` optimizer steps on a random slice of the real training split, it
evaluates dev once, and it writes only below its own folder (``results/<name>/rehearsal/``), where
the artifacts it saves are reloaded and then deleted. The job's learning-rate schedule and the
method's schedule (AdaLoRA's budget) see the real job's number of steps, so that what is built is
what the real job builds.

Any failure becomes the row's ``outcome`` (the error's first line) instead of failing the job, so
one job's failure never stops the others. It always runs in one process: a job that will run on
several GPUs is rehearsed on one (its per-step time is then an upper bound for the real job).
"""

from __future__ import annotations

import math
import shutil
import time
from dataclasses import dataclass, fields, replace
from pathlib import Path

import numpy as np

from seqpeft.util.errors import SeqpeftInputError

OK = "ok"
RELOAD_EXAMPLES = 8  # dev examples whose logits must survive save and reload


@dataclass
class RehearsalRow:
    """One line of ``rehearsal.csv``: what a job's rehearsal measured, and the full job extrapolated."""

    task: str
    model: str
    method: str
    partition: str
    outcome: str  # "ok", or the first line of the error that stopped the rehearsal
    steps: int = 0  # optimizer steps rehearsed
    batch_size: int = 0
    seconds_per_step: float = math.nan  # mean over the rehearsed steps after the first (warm-up)
    samples_per_second: float = math.nan
    eval_seconds: float = math.nan  # one (warm: the second) evaluation of the whole dev split
    overhead_seconds: float = math.nan  # start, load, test evaluation, save: once per job
    peak_memory_mb: float = math.nan
    memory_device: str = ""
    device: str = ""
    train_rows: int = 0  # the real job's training rows
    full_steps: int = 0  # the real job's optimizer steps (rows x epochs / batch size), no early stop
    full_evaluations: int = 0
    estimated_seconds: float = math.nan  # the full job, from the measurements above

    @classmethod
    def columns(cls) -> list[str]:
        return [f.name for f in fields(cls)]


def first_line(error: BaseException) -> str:
    """An error as one CSV-safe line: its type (unless it is one of ours) and the first line of its message."""
    text = str(error).strip().splitlines()[0] if str(error).strip() else ""
    line = text if isinstance(error, SeqpeftInputError) else f"{type(error).__name__}: {text}".rstrip(": ")
    return line.replace(",", ";")[:300]


def evaluations_of(steps_per_epoch: int, epochs: int, evals_per_epoch: int) -> int:
    """Dev evaluations of a full run (``seqpeft.training.loop.train_epoch``: every ``eval_every`` steps and at
    each epoch's end), without early stopping."""
    eval_every = max(1, math.ceil(steps_per_epoch / evals_per_epoch))
    per_epoch = steps_per_epoch // eval_every + (1 if steps_per_epoch % eval_every else 0)
    return per_epoch * epochs


def rehearse(job, steps: int, started: float | None = None) -> RehearsalRow:
    """Rehearse ``job`` (a ``seqpeft.config.settings.FinetuneJob`` whose ``out_dir`` is its rehearsal
    folder) for ``steps`` optimizer steps; never raises for a failure of the job itself.

    ``started``: when the job's process started (``time.time()`` scale), so that the overhead
    includes Python's start and imports, as the real job's time does.
    """
    started = time.time() if started is None else started
    row = RehearsalRow(job.task, job.model, job.method, str(job.partition), OK)
    try:
        _rehearse(job, int(steps), started, row)
    except Exception as error:  # noqa: BLE001 - every failure is the row's outcome, see the module doc
        import traceback

        traceback.print_exc()
        row.outcome = first_line(error) or type(error).__name__
    finally:  # what finish() wrote beside the artifacts is the rehearsal's, not a result: none of it stays
        for name in ("artifacts", "checkpoint"):
            shutil.rmtree(Path(job.out_dir) / name, ignore_errors=True)
        for name in ("metrics.json", "history.csv"):
            (Path(job.out_dir) / name).unlink(missing_ok=True)
    return row


def _rehearse(job, steps: int, started: float, row: RehearsalRow) -> None:
    import torch

    from seqpeft.core.batching import length_bucketed_batches
    from seqpeft.training.checkpoint import Checkpointer, LoopState, TermFlag
    from seqpeft.training.distributed import SINGLE
    from seqpeft.training.loop import evaluate_dev, finish, prepare_data, prepare_model, prepare_optimizer, train_step
    from seqpeft.config.settings import TrainingConfig

    if steps < 1:
        raise SeqpeftInputError("rehearsal.steps", f"is {steps}.", fix="rehearse at least 1 step.")
    # tuned settings come from a study the rehearsal does not run: it uses the configured ones
    job = replace(job, training={**job.training, "hpo": False}, best_params=None, gpus=min(int(job.gpus), 1))
    training = TrainingConfig.from_dict({**job.training, "processes": 1})
    run = prepare_data(job, training, SINGLE, print, None, dev_only=False)
    row.train_rows = len(run.splits["train"].data)
    row.full_steps = run.total_steps
    row.full_evaluations = evaluations_of(run.steps_per_epoch, training.epochs, training.evals_per_epoch)
    row.batch_size = training.batch_size
    rows = min(row.train_rows, steps * training.batch_size)
    keep = np.sort(run.rng.choice(row.train_rows, rows, replace=False))
    run.splits["train"] = run.splits["train"].subset(keep)
    prepare_model(run)
    prepare_optimizer(run)
    # saved only by finish() (no evaluation saves one here: see the loop below), which clears it
    run.checkpointer = Checkpointer(Path(job.out_dir), "rehearsal", math.inf)
    run.state = LoopState(micro_batch_size=training.batch_size)
    print(f"[seqpeft] rehearsal of {job.task}/{job.model}/{job.method}/{job.partition}: {steps} steps of "
          f"{training.batch_size} on {run.device} (the full job: {row.full_steps} steps, {row.full_evaluations} "
          f"evaluations)", flush=True)
    durations: list[float] = []
    batches: list = []
    with TermFlag() as term:
        while len(durations) < steps:
            if not batches:
                batches = length_bucketed_batches(run.splits["train"].data.lengths, training.batch_size,
                                                  training.bucket_size, run.rng)
            _synchronize(torch, run.device)
            begin = time.perf_counter()
            train_step(run, batches.pop(0), term)
            _synchronize(torch, run.device)
            durations.append(time.perf_counter() - begin)
        evaluations = []
        for _ in range(2):  # the first dev evaluation pays for lazy initialisation, as the first step does
            begin = time.perf_counter()
            evaluate_dev(run)
            _synchronize(torch, run.device)
            evaluations.append(time.perf_counter() - begin)
        row.eval_seconds = evaluations[-1]
    timed = durations[1:] or durations  # the first step pays for lazy initialisation
    row.steps = len(durations)
    row.seconds_per_step = float(np.mean(timed))
    row.samples_per_second = training.batch_size / row.seconds_per_step
    metrics = finish(run, None)  # the test evaluation and the save, into the rehearsal folder
    row.peak_memory_mb = float(metrics["peak_memory_mb"])
    row.memory_device = str(metrics["memory_device"])
    row.device = str(run.device)
    row.overhead_seconds = max(0.0, time.time() - started - sum(timed) - row.eval_seconds)
    row.estimated_seconds = (row.overhead_seconds + row.seconds_per_step * row.full_steps
                             + row.eval_seconds * row.full_evaluations)
    _check_reload(run, Path(job.out_dir) / "artifacts")


def _check_reload(run, artifacts: Path) -> None:
    """The saved artifacts load as ``seqpeft predict`` loads them and give the trained model's outputs."""
    import torch

    from seqpeft.training.evaluate import load_predictor

    dev = run.splits["dev"]
    sample = dev.subset(np.arange(min(RELOAD_EXAMPLES, len(dev.data))))
    predictor = load_predictor(artifacts)
    reloaded = predictor.objective.predict(predictor.model, sample, predictor.tokenizer.pad_token_id, run.max_length,
                                           len(sample.data), torch.device("cpu"))
    trained = run.objective.predict(run.core, sample, run.pad_id, run.max_length, len(sample.data), run.device)
    # bf16 autocast on a GPU and float32 on the CPU differ by rounding only
    tolerance = 1e-3 if run.precision == "fp32" else 0.1
    compared = 0
    for key, value in trained.items():
        try:
            before, after = np.asarray(value, dtype=np.float64), np.asarray(reloaded[key], dtype=np.float64)
        except (KeyError, TypeError, ValueError):  # ragged per-residue outputs: that they were produced is the check
            continue
        compared += 1
        if before.shape != after.shape or not np.allclose(before, after, rtol=tolerance, atol=tolerance, equal_nan=True):
            difference = np.nanmax(np.abs(before - after)) if before.shape == after.shape else "shapes differ"
            raise RuntimeError(f"the reloaded artifacts ({artifacts}) do not reproduce the trained model's {key!r} "
                               f"(largest difference {difference})")
    if not compared:
        raise RuntimeError(f"the reloaded artifacts ({artifacts}) gave no outputs to compare")


def _synchronize(torch, device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


# ---- the table of a config's rehearsals ----


def write_rows(rows: list[dict], path: Path) -> None:
    """``rehearsal.csv`` (atomically): one row per job, in the order given."""
    import csv
    import io

    from seqpeft.util.atomic import write_text_atomic

    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=RehearsalRow.columns(), lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow({key: row.get(key, "") for key in RehearsalRow.columns()})
    write_text_atomic(Path(path), buffer.getvalue())


def read_rows(path: Path) -> list[dict]:
    """The rows of a ``rehearsal.csv``, numbers as floats (NaN where a failed job measured nothing)."""
    import csv

    numeric = {f.name for f in fields(RehearsalRow) if f.type in ("int", "float")}
    rows = []
    with open(path, newline="") as handle:
        for row in csv.DictReader(handle):
            rows.append({key: (float(value) if key in numeric and value not in ("", None) else
                               (math.nan if key in numeric else value)) for key, value in row.items()})
    return rows


def _hours(seconds: float) -> str:
    if math.isnan(seconds):
        return "-"
    return f"{seconds / 3600:.2f} h" if seconds >= 360 else f"{seconds:.0f} s"


def format_table(rows: list[dict]) -> str:
    """The short table ``seqpeft rehearse`` prints: per model x method, how many jobs are ok, the
    slowest step, the largest peak memory and the longest extrapolated job; then every failure."""
    groups: dict[tuple[str, str], list[dict]] = {}
    for row in rows:
        groups.setdefault((row["model"], row["method"]), []).append(row)
    header = f"{'model':<24} {'method':<20} {'ok':>7} {'s/step':>8} {'samples/s':>10} {'peak MB':>9} {'full job':>9}"
    lines = [header, "-" * len(header)]
    for (model, method), group in groups.items():
        ok = [row for row in group if row["outcome"] == OK]

        def worst(key, pick=max):
            values = [row[key] for row in ok if not math.isnan(row[key])]
            return pick(values) if values else math.nan

        step, speed, peak, full = worst("seconds_per_step"), worst("samples_per_second", min), worst("peak_memory_mb"), \
            worst("estimated_seconds")
        lines.append(f"{model:<24} {method:<20} {f'{len(ok)}/{len(group)}':>7} "
                     f"{'-' if math.isnan(step) else f'{step:.3f}':>8} {'-' if math.isnan(speed) else f'{speed:.0f}':>10} "
                     f"{'-' if math.isnan(peak) else f'{peak:.0f}':>9} {_hours(full):>9}")
    failed = [row for row in rows if row["outcome"] != OK]
    lines.append("-" * len(header))
    lines.append(f"{len(rows) - len(failed)} of {len(rows)} jobs ok (per group: the slowest step, the largest peak "
                 "memory and the longest extrapolated job)")
    for row in failed:
        lines.append(f"FAILED {row['task']}/{row['model']}/{row['method']}/{row['partition']}: {row['outcome']}")
    return "\n".join(lines)


# ---- `seqpeft rehearse`: the workflow's rehearsal target, then the table ----


def checkout() -> Path:
    """The seqpeft checkout this package runs from (its Snakefile and profiles)."""
    return Path(__file__).resolve().parents[3]


def rehearse_config(configfile: Path, profile: Path | None, steps: int | None, extra: list[str]) -> int:
    """Run the ``rehearsal`` target of ``configfile`` with Snakemake (in this directory, under
    ``profile``, default the checkout's local one; ``--keep-going``, so a job that dies outright
    stops nobody else), then print the table of ``rehearsal.csv``; Snakemake's exit status.

    ``steps`` replaces ``rehearsal.steps`` through a config file given before the user's (the
    user's is last, so its pins.yaml is the one applied, see ``seqpeft.config.pins.merge_pins_file``).
    """
    import os
    import subprocess
    import sys
    import tempfile

    import yaml

    from seqpeft.config.paths import rehearsal_table
    from seqpeft.preflight.plan import load_config

    config, _ = load_config(configfile)
    user = yaml.safe_load(Path(configfile).read_text()) or {}
    if steps is not None and "steps" in (user.get("rehearsal") or {}):
        raise SeqpeftInputError(configfile, f"sets rehearsal.steps: {user['rehearsal']['steps']} and --steps {steps} was "
                                "given.", fix="drop --steps, or rehearsal.steps from the config.")
    profile = Path(profile) if profile is not None else checkout() / "profiles" / "local"
    with tempfile.TemporaryDirectory(prefix="seqpeft-rehearse-") as tmp:
        configfiles = [str(configfile)]
        if steps is not None:
            overlay = Path(tmp) / "steps.yaml"
            overlay.write_text(yaml.safe_dump({"rehearsal": {"steps": int(steps)}}))
            configfiles.insert(0, str(overlay))
        command = [sys.executable, "-m", "snakemake", "rehearsal", "--forcerun", "rehearsal", "--keep-going",
                   "-s", str(checkout() / "Snakefile"), "-d", os.getcwd(), "--profile", str(profile), *extra,
                   "--configfile", *configfiles]
        print("[seqpeft] " + " ".join(command[2:]), flush=True)
        code = subprocess.run(command).returncode
    table = Path(rehearsal_table(config))
    if table.is_file():
        print(f"\n{table}:")
        print(format_table(read_rows(table)))
    return code
