"""Helpers every benchmark shares: paths, the alternating repeat loop, medians and the table.

Benchmarks run on a noisy shared machine, so every comparison alternates its contenders
(A, B, A, B, ...) and reports medians: a burst of load from another process hits both sides.
"""

from __future__ import annotations

import os
import statistics
import time
from pathlib import Path
from typing import Callable

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("SEQPEFT_SHARED", REPO.parent / "shared"))
CHECKPOINT = SHARED / "models" / "mistral-dna-v1-1m-hg38-tf0"
GUE_TF0 = SHARED / "data" / "gue" / "tf" / "0"
GUE_PROM_CORE_ALL = SHARED / "data" / "gue" / "prom" / "prom_core_all"
SIGNALP = SHARED / "data" / "signalp" / "train_set.fasta"

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


def require(*paths: Path) -> None:
    """Stop with a clear message when ../shared material is missing."""
    missing = [str(p) for p in paths if not p.exists()]
    if missing:
        raise SystemExit(f"missing benchmark inputs: {', '.join(missing)} (../shared must sit beside the checkout, "
                         "or set SEQPEFT_SHARED)")


def alternate(contenders: dict[str, Callable[[int], dict]], repeats: int) -> dict[str, list[dict]]:
    """Run each contender ``repeats`` times, interleaved A, B, A, B; returns their result dicts."""
    results: dict[str, list[dict]] = {name: [] for name in contenders}
    for repeat in range(repeats):
        for name, run in contenders.items():
            started = time.perf_counter()
            result = run(repeat)
            result.setdefault("seconds", time.perf_counter() - started)
            results[name].append(result)
            print(f"  repeat {repeat + 1}/{repeats} {name}: " +
                  ", ".join(f"{k} {v:.4g}" if isinstance(v, float) else f"{k} {v}" for k, v in result.items()), flush=True)
    return results


def median(values) -> float:
    return float(statistics.median(values))


def print_table(header: list[str], rows: list[list]) -> None:
    cells = [[str(h) for h in header]] + [[_fmt(v) for v in row] for row in rows]
    widths = [max(len(row[i]) for row in cells) for i in range(len(header))]
    for index, row in enumerate(cells):
        print("  ".join(cell.rjust(width) if index else cell.ljust(width) for cell, width in zip(row, widths)))
        if index == 0:
            print("  ".join("-" * width for width in widths))


def _fmt(value) -> str:
    if isinstance(value, float):
        return f"{value:.4g}" if abs(value) < 1000 else f"{value:,.0f}"
    return str(value)
