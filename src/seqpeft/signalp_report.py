"""Signal-peptide results across runs: the per-kingdom x type table and its two figures.

``signalp_table.csv`` has one row per task x model x method x kingdom x SP type with, for every
metric, the mean, sample sd and count of defined runs (a cell without positives in a test
partition is NaN in that run and left out), plus readable ``mcc2``/``mcc1`` columns
(``0.712 ± 0.013 (n=4)``). Cells undefined in every run are dropped.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from seqpeft.aggregate import _format_mean_sd
from seqpeft.atomic import atomic_file
from seqpeft.errors import SeqpeftInputError
from seqpeft.signalp import METRIC_COLUMNS

KEYS = ("task", "model", "method", "kingdom", "sp_type")


def run_rows(metrics_files: Sequence[str | Path]) -> pd.DataFrame:
    """Long table: one row per run x kingdom x SP type, one column per metric."""
    rows = []
    for path in metrics_files:
        raw = json.loads(Path(path).read_text())
        table = raw.get("test", {}).get("signalp")
        if not isinstance(table, dict):
            raise SeqpeftInputError(path, "has no per-kingdom signal-peptide table (test.signalp).",
                                    fix="rerun the fine-tuning job with this version of seqpeft.")
        for kingdom, types in table.items():
            for sp_type, cell in types.items():
                rows.append({"task": raw["task"], "model": raw["model"], "method": raw["method"],
                             "partition": str(raw["partition"]), "kingdom": kingdom, "sp_type": sp_type,
                             **{c: math.nan if cell.get(c) is None else float(cell[c]) for c in METRIC_COLUMNS}})
    return pd.DataFrame(rows, columns=["task", "model", "method", "partition", "kingdom", "sp_type", *METRIC_COLUMNS])


def build_signalp_table(rows: pd.DataFrame) -> pd.DataFrame:
    records = []
    for keys, group in rows.groupby(list(KEYS), sort=False):
        record = dict(zip(KEYS, keys))
        record["n_runs"] = len(group)
        for metric in METRIC_COLUMNS:
            values = group[metric].to_numpy(dtype=float)
            values = values[~np.isnan(values)]
            record[f"{metric}_mean"] = float(values.mean()) if len(values) else math.nan
            record[f"{metric}_sd"] = float(values.std(ddof=1)) if len(values) > 1 else math.nan
            record[f"{metric}_n"] = len(values)
        if record["mcc2_n"] == 0:
            continue
        for metric in ("mcc2", "mcc1"):
            record[metric] = _format_mean_sd(record[f"{metric}_mean"], record[f"{metric}_sd"], record[f"{metric}_n"],
                                             record["n_runs"])
        records.append(record)
    return pd.DataFrame(records)


def write_signalp_table(metrics_files: Sequence[str | Path], out_csv: str | Path) -> pd.DataFrame:
    table = build_signalp_table(run_rows(metrics_files))
    with atomic_file(out_csv) as tmp:
        table.to_csv(tmp, index=False)
    return table


def _cells(table: pd.DataFrame) -> list[str]:
    return list(dict.fromkeys(f"{k}\n{t}" for k, t in zip(table["kingdom"], table["sp_type"])))


def _grouped_bars(axis, table: pd.DataFrame, metric: str) -> None:
    cells = _cells(table)
    runs = list(dict.fromkeys(zip(table["model"], table["method"])))
    width = 0.8 / max(len(runs), 1)
    for i, (model, method) in enumerate(runs):
        sub = table[(table["model"] == model) & (table["method"] == method)]
        lookup = {f"{k}\n{t}": (m, s) for k, t, m, s in zip(sub["kingdom"], sub["sp_type"], sub[f"{metric}_mean"],
                                                              sub[f"{metric}_sd"])}
        means = [lookup.get(c, (math.nan, math.nan))[0] for c in cells]
        sds = [lookup.get(c, (math.nan, math.nan))[1] for c in cells]
        axis.bar(np.arange(len(cells)) + i * width - 0.4 + width / 2, means, width, yerr=np.nan_to_num(sds),
                 label=f"{model} / {method}", capsize=2)
    axis.set_xticks(np.arange(len(cells)), cells, fontsize=7)
    axis.axhline(0, color="black", linewidth=0.5)


def _save(figure, png: str | Path, svg: str | Path) -> None:
    with atomic_file(png) as tmp:
        figure.savefig(tmp, format="png", dpi=150)
    with atomic_file(svg) as tmp:
        figure.savefig(tmp, format="svg", metadata={"Date": None})


def plot_mcc_bars(table: pd.DataFrame, png: str | Path, svg: str | Path) -> None:
    """Grouped bars of MCC2 (top) and MCC1 (bottom) per kingdom x type, one bar per model x method."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    figure = Figure(figsize=(max(8, 0.6 * len(_cells(table)) + 4), 7), layout="constrained")
    FigureCanvasAgg(figure)
    for axis, metric in zip(figure.subplots(2, 1), ("mcc2", "mcc1")):
        _grouped_bars(axis, table, metric)
        axis.set_ylabel(metric.upper() + " (mean ± sd over runs)")
    figure.axes[0].legend(fontsize=7, ncols=2)
    _save(figure, png, svg)


def plot_cleavage_sites(table: pd.DataFrame, png: str | Path, svg: str | Path) -> None:
    """Cleavage-site precision (left) and recall (right) at w = 0 per kingdom x type."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    figure = Figure(figsize=(max(12, 1.2 * len(_cells(table)) + 4), 4.5), layout="constrained")
    FigureCanvasAgg(figure)
    for axis, metric, title in zip(figure.subplots(1, 2), ("cs_precision_w0", "cs_recall_w0"), ("precision", "recall")):
        _grouped_bars(axis, table, metric)
        axis.set_title(f"Cleavage-site {title}, w = 0")
        axis.set_ylim(0, 1.05)
    figure.axes[0].legend(fontsize=7)
    _save(figure, png, svg)


def plot_task_figures(table_csv: str | Path, task: str, outputs: dict[str, Path]) -> None:
    """Both figures of one task from ``signalp_table.csv`` (outputs: mcc_png/svg, cs_png/svg)."""
    table = pd.read_csv(table_csv)
    table = table[table["task"] == task]
    if table.empty:
        raise SeqpeftInputError(table_csv, f"has no rows for task {task!r}.", fix="rerun the signalp_table rule.")
    plot_mcc_bars(table, outputs["mcc_png"], outputs["mcc_svg"])
    plot_cleavage_sites(table, outputs["cs_png"], outputs["cs_svg"])
