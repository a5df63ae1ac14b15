"""Tests for seqpeft.analysis.aggregate on hand-written run directories."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from seqpeft.analysis.aggregate import SUMMARY_COLUMNS, load_run_metrics, write_summary
from seqpeft.util.errors import SeqpeftInputError


def make_metrics(task="promoter", model="nt-50m", method="lora", partition="0", mcc=0.7, **extra):
    split = {"mcc": mcc, "accuracy": 0.85, "f1": 0.84, "precision": 0.83, "recall": 0.86, "loss": 0.35}
    metrics = {
        "task": task,
        "model": model,
        "method": method,
        "partition": partition,
        "task_kind": "sequence_classification",
        "test": dict(split),
        "dev": {**split, "mcc": 0.75},
        "trainable_params": 1000,
        "total_params": 100000,
        "peak_memory_mb": 512.0,
        "memory_device": "cpu",
        "memory_measure": "cpu_peak_rss_since_model_load",
        "head": "seqpeft",
        "train_seconds": 60.0,
        "best_epoch": 2,
        "best_step": 200,
        "epochs_run": 3,
        "train_samples_per_second": 12.5,
        "seed": 1,
    }
    metrics.update(extra)
    return metrics


def write_run(root: Path, metrics: dict) -> Path:
    run_dir = root / "runs" / metrics["task"] / metrics["model"] / metrics["method"] / str(metrics["partition"])
    run_dir.mkdir(parents=True, exist_ok=True)
    path = run_dir / "metrics.json"
    path.write_text(json.dumps(metrics), encoding="utf-8")  # json.dumps writes NaN as NaN
    return path


def test_load_run_metrics_flattens_and_skips_non_scalars(tmp_path):
    path = write_run(
        tmp_path,
        make_metrics(extra_info={"lr": 1e-4, "nested": {"deep": 1}, "tags": ["a"]}, history=[1, 2], note="x"),
    )
    flat = load_run_metrics(path)
    assert flat["test_mcc"] == 0.7 and flat["dev_mcc"] == 0.75 and flat["test_loss"] == 0.35
    assert flat["trainable_fraction"] == pytest.approx(0.01)
    assert flat["extra_info_lr"] == 1e-4
    assert "extra_info_nested" not in flat and "extra_info_tags" not in flat and "history" not in flat
    assert flat["note"] == "x"
    assert "test" not in flat and "dev" not in flat


def test_missing_key_error_names_file_and_key(tmp_path):
    metrics = make_metrics()
    del metrics["peak_memory_mb"]
    path = write_run(tmp_path, metrics)
    with pytest.raises(SeqpeftInputError) as info:
        load_run_metrics(path)
    assert str(path) in str(info.value) and "'peak_memory_mb'" in str(info.value)

    metrics = make_metrics()
    del metrics["test"]["recall"]
    path = write_run(tmp_path, metrics)
    with pytest.raises(SeqpeftInputError, match=r"'test\.recall'") as info:
        write_summary([path], tmp_path / "s.csv", tmp_path / "t.csv")
    assert str(path) in str(info.value)
    assert not (tmp_path / "s.csv").exists()


def test_bad_json_and_bad_value(tmp_path):
    bad = tmp_path / "metrics.json"
    bad.write_text('{"task": "a",\n  oops}', encoding="utf-8")
    with pytest.raises(SeqpeftInputError, match="line 2"):
        load_run_metrics(bad)
    path = write_run(tmp_path, make_metrics(train_seconds="fast"))
    with pytest.raises(SeqpeftInputError, match="'train_seconds' must be a number"):
        load_run_metrics(path)


def test_write_summary_values_sorting_and_table(tmp_path):
    files = []
    # lora on nt-50m: three partitions, written out of order; partition 10 must sort after 2.
    for partition, mcc, secs in [("10", 0.72, 30.0), ("0", 0.70, 10.0), ("2", 0.74, 20.0)]:
        files.append(write_run(tmp_path, make_metrics(partition=partition, mcc=mcc, train_seconds=secs)))
    # full fine-tuning: one run only -> sd NaN.
    files.append(write_run(tmp_path, make_metrics(method="full", mcc=0.8, trainable_params=100000)))
    # ia3: one of two runs has an undefined (NaN) MCC.
    files.append(write_run(tmp_path, make_metrics(method="ia3", partition="0", mcc=float("nan"))))
    files.append(write_run(tmp_path, make_metrics(method="ia3", partition="1", mcc=0.5)))
    # another task, listed first in the file order, sorts first by name.
    files.insert(0, write_run(tmp_path, make_metrics(task="splice", model="esm2", mcc=0.1)))

    out = tmp_path / "out"
    write_summary(files, out / "summary.csv", out / "table.csv", out / "summary.parquet")

    summary = pd.read_csv(out / "summary.csv", dtype={"partition": str})
    assert list(summary.columns[:16]) == list(SUMMARY_COLUMNS[:16])
    assert list(summary.columns[:5]) == ["task", "model", "method", "partition", "test_mcc"]
    keys = list(summary[["task", "method", "partition"]].itertuples(index=False, name=None))
    assert keys == [
        ("promoter", "full", "0"),
        ("promoter", "ia3", "0"),
        ("promoter", "ia3", "1"),
        ("promoter", "lora", "0"),
        ("promoter", "lora", "2"),
        ("promoter", "lora", "10"),
        ("splice", "lora", "0"),
    ]
    assert math.isnan(summary.loc[1, "test_mcc"])
    assert summary.loc[0, "trainable_fraction"] == pytest.approx(1.0)
    assert "dev_mcc" in summary.columns and "seed" in summary.columns
    # what peak_memory_mb means, beside it, for every run
    assert list(summary.columns[list(summary.columns).index("memory_device"):][:3]) == ["memory_device", "memory_measure", "head"]
    assert (summary.memory_measure == "cpu_peak_rss_since_model_load").all() and (summary["head"] == "seqpeft").all()

    parquet = pd.read_parquet(out / "summary.parquet")
    assert len(parquet) == 7 and list(parquet.columns) == list(summary.columns)

    table = pd.read_csv(out / "table.csv")
    assert list(table[["task", "method"]].itertuples(index=False, name=None)) == [
        ("promoter", "full"), ("promoter", "ia3"), ("promoter", "lora"), ("splice", "lora"),
    ]
    table = table.set_index(["task", "method"])
    lora = table.loc[("promoter", "lora")]
    assert lora["n_runs"] == 3 and lora["test_mcc_n"] == 3
    assert lora["test_mcc_mean"] == pytest.approx(0.72)
    assert lora["test_mcc_sd"] == pytest.approx(np.std([0.70, 0.72, 0.74], ddof=1))
    assert lora["train_seconds_mean"] == pytest.approx(20.0)
    assert lora["train_seconds_sd"] == pytest.approx(10.0)
    assert lora["test_mcc"] == "0.720 ± 0.020"
    for metric in ("test_mcc", "test_accuracy", "test_f1", "trainable_params", "peak_memory_mb", "train_seconds"):
        assert {f"{metric}_mean", f"{metric}_sd", f"{metric}_n"} <= set(table.columns)

    full = table.loc[("promoter", "full")]
    assert full["n_runs"] == 1 and math.isnan(full["test_mcc_sd"]) and full["test_mcc"] == "0.800"
    assert full["trainable_params_mean"] == 100000

    ia3 = table.loc[("promoter", "ia3")]
    assert ia3["n_runs"] == 2 and ia3["test_mcc_n"] == 1
    assert ia3["test_mcc_mean"] == pytest.approx(0.5) and math.isnan(ia3["test_mcc_sd"])
    assert ia3["test_mcc"] == "0.500 (n=1)"
    assert ia3["test_accuracy_n"] == 2

    # atomic writes leave no temporary files behind
    assert sorted(p.name for p in out.iterdir()) == ["summary.csv", "summary.parquet", "table.csv"]


def test_duplicate_run_and_empty_input(tmp_path):
    a = write_run(tmp_path / "a", make_metrics())
    b = write_run(tmp_path / "b", make_metrics())
    with pytest.raises(SeqpeftInputError, match="also reported by"):
        write_summary([a, b], tmp_path / "s.csv", tmp_path / "t.csv")
    with pytest.raises(SeqpeftInputError, match="no metrics.json"):
        write_summary([], tmp_path / "s.csv", tmp_path / "t.csv")
