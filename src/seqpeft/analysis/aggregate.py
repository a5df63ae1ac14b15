"""Collect the ``metrics.json`` of every fine-tuning run into a per-run summary and a results table.

``summary.csv`` has one row per run (task x model x method x partition); ``table.csv`` has one row
per task x model x method with the mean, sample standard deviation and count of the headline
metrics over partitions, plus human-readable ``test_score`` and ``test_mcc`` columns (``0.712 ± 0.013``).
``score`` names each run's headline metric, its task kind's (MCC; Spearman for regression), and
``test_score`` / ``dev_score`` hold it, so tables and figures rank every kind by its own score.

Both files are written atomically (temporary file in the same directory, then ``os.replace``) so an
interrupted job never leaves a half-written table for a later rule to read. Neither this module
nor anything it imports needs torch.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from seqpeft.util.atomic import atomic_file
from seqpeft.util.errors import SeqpeftInputError

ID_KEYS = ("task", "model", "method", "partition")
METRIC_KEYS = ("mcc", "accuracy", "f1", "precision", "recall", "loss")
# The metrics a run's test and dev blocks must hold, by the run's headline ``score`` (metrics.json,
# its task kind's TaskKind.score): the classification metrics for MCC, else the score and the loss.
REQUIRED_METRICS = {"mcc": METRIC_KEYS}
SPLITS = ("test", "dev")
NUMERIC_KEYS = ("trainable_params", "total_params", "peak_memory_mb", "train_seconds", "best_epoch")
REQUIRED_KEYS = ID_KEYS + SPLITS + NUMERIC_KEYS

# Leading columns of summary.csv, in this order; every other column follows.
SUMMARY_COLUMNS = (
    *ID_KEYS,
    *(f"test_{m}" for m in METRIC_KEYS),
    "trainable_params",
    "total_params",
    "trainable_fraction",
    "peak_memory_mb",
    "train_seconds",
    "best_epoch",
    *(f"dev_{m}" for m in METRIC_KEYS),
    "best_step",
    "epochs_run",
    "train_samples_per_second",
    "seed",
    "task_kind",
    "memory_device",
    "memory_measure",  # what peak_memory_mb measures (seqpeft.training.assemble: CUDA allocator peak or a CPU RSS peak)
    "head",  # the classifier: seqpeft's own, or the family's transformers class (seqpeft.models.hf_head)
    "world_size",  # processes (GPUs) of the job: train_seconds x world_size is its device time
    "score",  # the name of the run's headline metric (its task kind's): mcc, or spearman for regression
    "test_score",
    "dev_score",
)

# Metrics summarised over partitions in table.csv.
TABLE_METRICS = (
    "test_score",
    "test_mcc",
    "test_accuracy",
    "test_f1",
    "trainable_params",
    "peak_memory_mb",
    "train_seconds",
)
GROUP_KEYS = ("task", "model", "method")


def _write_atomic(path: str | Path, write: Callable[[Path], Any]) -> None:
    with atomic_file(path) as tmp:
        write(tmp)


# --------------------------------------------------------------------------------------------
# reading one run


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _number(path: Path, key: str, value: Any) -> float | int:
    """A required numeric value; JSON null means NaN (e.g. an undefined MCC)."""
    if value is None:
        return math.nan
    if not _is_number(value):
        raise SeqpeftInputError(
            path,
            f"key {key!r} must be a number, got {value!r}.",
            fix="Re-run the fine-tuning job that wrote this file.",
        )
    return value


def load_run_metrics(path: str | Path) -> dict[str, Any]:
    """Read one run's ``metrics.json`` and return a flat dict.

    ``test`` and ``dev`` are flattened to ``test_mcc``, ``test_accuracy``, ..., ``dev_mcc``, ...;
    other nested dicts are flattened to ``<key>_<subkey>`` for their scalar values only; lists
    and deeper nesting are dropped. ``trainable_fraction`` is added. Missing required keys, or
    non-numeric metrics, raise :class:`SeqpeftInputError` naming the file and the key.
    """
    path = Path(path)
    fix = "Re-run the fine-tuning job that writes this file (it may have been interrupted)."
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise SeqpeftInputError(path, "metrics file does not exist.", fix=fix) from None
    try:
        raw = json.loads(text)
    except json.JSONDecodeError as err:
        raise SeqpeftInputError(path, f"not valid JSON ({err.msg}).", fix=fix, line=err.lineno) from None
    if not isinstance(raw, dict):
        raise SeqpeftInputError(path, "expected a JSON object at the top level.", fix=fix)

    missing = [key for key in REQUIRED_KEYS if key not in raw]
    if missing:
        raise SeqpeftInputError(
            path, f"missing required key(s): {', '.join(repr(k) for k in missing)}.", fix=fix
        )

    flat: dict[str, Any] = {}
    for key in ID_KEYS:
        value = raw[key]
        if not isinstance(value, (str, int)) or isinstance(value, bool) or str(value) == "":
            raise SeqpeftInputError(path, f"key {key!r} must be a non-empty string, got {value!r}.", fix=fix)
        flat[key] = str(value)

    score = str(raw.get("score") or "mcc")  # runs written before the key existed were scored on MCC
    required = REQUIRED_METRICS.get(score, (score, "loss"))
    flat["score"] = score
    for split in SPLITS:
        block = raw[split]
        if not isinstance(block, dict):
            raise SeqpeftInputError(path, f"key {split!r} must be an object of metrics, got {block!r}.", fix=fix)
        missing = [m for m in required if m not in block]
        if missing:
            names = ", ".join(f"'{split}.{m}'" for m in missing)
            raise SeqpeftInputError(path, f"missing required key(s): {names}.", fix=fix)
        for metric in required:
            flat[f"{split}_{metric}"] = _number(path, f"{split}.{metric}", block[metric])
        for metric, value in block.items():  # extra metrics (e.g. auroc) if scalar
            if metric not in required and (_is_number(value) or isinstance(value, str) or value is None):
                flat[f"{split}_{metric}"] = math.nan if value is None else value
        flat[f"{split}_score"] = flat[f"{split}_{score}"]

    for key in NUMERIC_KEYS:
        flat[key] = _number(path, key, raw[key])

    total = flat["total_params"]
    trainable = flat["trainable_params"]
    flat["trainable_fraction"] = trainable / total if total and not math.isnan(total) else math.nan

    # Everything else: keep scalars, flatten scalar members of dicts, skip lists / deep nesting.
    for key, value in raw.items():
        if key in REQUIRED_KEYS:
            continue
        if isinstance(value, dict):
            for sub, subvalue in value.items():
                name = f"{key}_{sub}"
                if name not in flat and (_is_number(subvalue) or isinstance(subvalue, (str, bool))):
                    flat[name] = subvalue
        elif key not in flat and (_is_number(value) or isinstance(value, (str, bool)) or value is None):
            flat[key] = value
    return flat


# --------------------------------------------------------------------------------------------
# summary and table


def _natural_key(value: Any) -> tuple:
    """Sort key that orders ``partition2`` before ``partition10`` and ``2`` before ``10``."""
    parts = re.split(r"(\d+)", str(value))
    return tuple((0, int(p), "") if p.isdigit() else (1, 0, p) for p in parts if p != "")


def _sorted_frame(rows: Sequence[dict[str, Any]], keys: Sequence[str]) -> list[dict[str, Any]]:
    return sorted(rows, key=lambda row: tuple(_natural_key(row[k]) for k in keys))


def _format_mean_sd(mean: float, sd: float, n: int, n_runs: int) -> str:
    if math.isnan(mean):
        return "n/a"
    text = f"{mean:.3f}" if math.isnan(sd) else f"{mean:.3f} ± {sd:.3f}"
    if n < n_runs:  # some runs had an undefined metric: say so rather than hide it
        text += f" (n={n})"
    return text


def build_summary(metrics_files: Sequence[str | Path]) -> pd.DataFrame:
    """One row per run, leading columns as in :data:`SUMMARY_COLUMNS`, naturally sorted."""
    if not metrics_files:
        raise SeqpeftInputError(None, "no metrics.json files to summarise.", fix="Check the list of runs in the config.")
    rows: list[dict[str, Any]] = []
    seen: dict[tuple, Path] = {}
    for file in metrics_files:
        row = load_run_metrics(file)
        run = tuple(row[k] for k in ID_KEYS)
        if run in seen:
            raise SeqpeftInputError(
                file,
                f"run {'/'.join(run)} is also reported by {seen[run]}.",
                fix="Each task/model/method/partition must have exactly one metrics.json.",
            )
        seen[run] = Path(file)
        rows.append(row)
    rows = _sorted_frame(rows, ID_KEYS)
    present = {key for row in rows for key in row}
    columns = [c for c in SUMMARY_COLUMNS if c in present]
    columns += sorted(present - set(columns))
    return pd.DataFrame(rows, columns=columns)


def build_table(summary: pd.DataFrame) -> pd.DataFrame:
    """One row per task x model x method: ``n_runs``, ``test_mcc`` (``mean ± sd``) and, for each
    metric in :data:`TABLE_METRICS`, ``<metric>_mean``, ``<metric>_sd`` (sample sd, NaN for a
    single value) and ``<metric>_n`` (number of non-NaN values used)."""
    records = []
    for keys, group in summary.groupby(list(GROUP_KEYS), sort=False):
        record: dict[str, Any] = dict(zip(GROUP_KEYS, keys))
        record["n_runs"] = len(group)
        record["score"] = "/".join(sorted(set(group["score"].astype(str)))) if "score" in group else "mcc"
        record["test_score"] = ""
        record["test_mcc"] = ""
        for metric in TABLE_METRICS:
            if metric not in group:  # e.g. test_mcc in a summary of regression runs only
                group = group.assign(**{metric: math.nan})
            values = pd.to_numeric(group[metric], errors="coerce").to_numpy(dtype=float)
            values = values[~np.isnan(values)]
            n = len(values)
            record[f"{metric}_mean"] = float(values.mean()) if n else math.nan
            record[f"{metric}_sd"] = float(values.std(ddof=1)) if n > 1 else math.nan
            record[f"{metric}_n"] = n
        for shown in ("test_score", "test_mcc"):
            record[shown] = _format_mean_sd(
                record[f"{shown}_mean"], record[f"{shown}_sd"], record[f"{shown}_n"], record["n_runs"]
            )
        records.append(record)
    records = _sorted_frame(records, GROUP_KEYS)
    return pd.DataFrame(records)


def write_summary(
    metrics_files: Sequence[str | Path],
    summary_csv: str | Path,
    table_csv: str | Path,
    summary_parquet: str | Path | None = None,
    predictions_files: Sequence[str | Path] | None = None,
    config: dict | None = None,
) -> None:
    """Write ``summary.csv`` (one row per run), ``table.csv`` (one row per task x model x method,
    with the score's interval from ``seqpeft.analysis.stats`` when the runs' predictions are given) and
    optionally a Parquet copy of the summary, each atomically."""
    summary = build_summary(metrics_files)
    table = build_table(summary)
    if predictions_files is not None:
        from seqpeft.analysis.stats import StatsSettings, add_intervals, load_predictions

        frames, scorers = load_predictions(predictions_files)
        table = add_intervals(table, summary, frames, scorers, StatsSettings.from_config(config))
    _write_atomic(summary_csv, lambda tmp: summary.to_csv(tmp, index=False))
    _write_atomic(table_csv, lambda tmp: table.to_csv(tmp, index=False))
    if summary_parquet is not None:
        frame = _parquet_safe(summary)
        _write_atomic(summary_parquet, lambda tmp: frame.to_parquet(tmp, index=False, engine="pyarrow"))


def _parquet_safe(frame: pd.DataFrame) -> pd.DataFrame:
    """Parquet needs one type per column: turn columns mixing types (an extra key that is a
    number in one run and a string in another) into strings, keeping missing values missing."""
    frame = frame.copy()
    for column in frame.columns:
        if frame[column].dtype == object:
            values = frame[column].dropna()
            if len({type(v) for v in values}) > 1:
                frame[column] = frame[column].map(lambda v: v if pd.isna(v) else str(v))
    return frame
