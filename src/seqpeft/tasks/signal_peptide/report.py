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
from seqpeft.tasks.signal_peptide.metrics import METRIC_COLUMNS

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


def _cell_labels(table: pd.DataFrame, metric: str) -> list[str]:
    """Tick labels: kingdom, SP type and the number of runs in which the cell was defined."""
    labels = []
    for cell in _cells(table):
        kingdom, sp_type = cell.split("\n")
        rows = table[(table["kingdom"] == kingdom) & (table["sp_type"] == sp_type)]
        defined = dict(zip(rows["method"], rows[f"{metric}_n"].astype(int)))
        counts = sorted({defined.get(method, 0) for method in table["method"].unique()})
        labels.append(f"{kingdom}\n{sp_type}\nn={'/'.join(map(str, counts))}")
    return labels


def _grouped_bars(axis, table: pd.DataFrame, metric: str, styles: dict) -> None:
    """One bar per method in each kingdom x type cell; sd error bars only where two or more runs
    define the cell (no cap for n = 1); a cell no run defines is a grey x at 0, not a bar."""
    cells = _cells(table)
    methods = [m for m in styles if m in set(table["method"])]
    width = 0.8 / max(len(methods), 1)
    for i, method in enumerate(methods):
        sub = table[table["method"] == method]
        lookup = {f"{k}\n{t}": (m, s, n) for k, t, m, s, n in zip(sub["kingdom"], sub["sp_type"], sub[f"{metric}_mean"],
                                                                    sub[f"{metric}_sd"], sub[f"{metric}_n"])}
        x = np.arange(len(cells)) + i * width - 0.4 + width / 2
        values = [lookup.get(c, (math.nan, math.nan, 0)) for c in cells]
        means = np.array([v[0] for v in values], dtype=float)
        sds = np.array([v[1] if v[2] > 1 else math.nan for v in values], dtype=float)
        present = np.isfinite(means)
        axis.bar(x[present], means[present], width, color=styles[method].colour, hatch=styles[method].hatch,
                 edgecolor="white", linewidth=0, label=method)
        zero = present & (np.abs(np.nan_to_num(means)) < 0.005)
        if zero.any():  # a defined value of 0 (a constant predictor's MCC) stays visible: a flat bar
            axis.hlines(np.zeros(int(zero.sum())), x[zero] - width / 2, x[zero] + width / 2, colors=styles[method].colour,
                        linewidth=2.5, zorder=3, gid="zero-value")
        with_sd = present & np.isfinite(sds)
        if with_sd.any():
            axis.errorbar(x[with_sd], means[with_sd], yerr=sds[with_sd], fmt="none", ecolor="0.2", elinewidth=0.8,
                          capsize=2)
        if (~present).any():
            axis.scatter(x[~present], np.zeros(int((~present).sum())), marker="x", s=22, color="0.4", linewidths=1.0,
                         zorder=3, clip_on=False)
    axis.set_xticks(np.arange(len(cells)), _cell_labels(table, metric), fontsize=7)
    axis.axhline(0, color="black", linewidth=0.5)
    axis.grid(True, axis="y", alpha=0.3)


def _legend(figure, styles: dict, table: pd.DataFrame) -> None:
    from matplotlib.lines import Line2D
    from matplotlib.patches import Patch

    handles = [Patch(facecolor=st.colour, hatch=st.hatch, edgecolor="white", label=m) for m, st in styles.items()
               if m in set(table["method"])]
    handles.append(Line2D([], [], linestyle="", marker="x", color="0.5", label="no value (undefined in every run of the method)"))
    figure.legend(handles=handles, loc="outside right upper", fontsize=7, title="method")


def _save(figure, png: str | Path, svg: str | Path) -> None:
    import matplotlib

    with matplotlib.rc_context({"svg.fonttype": "none", "svg.hashsalt": "seqpeft"}):
        with atomic_file(png) as tmp:
            figure.savefig(tmp, format="png", dpi=150, metadata={"Software": None})
        with atomic_file(svg) as tmp:
            figure.savefig(tmp, format="svg", metadata={"Date": None})


def _figure(width: float, height: float):
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    figure = Figure(figsize=(width, height), layout="constrained")
    FigureCanvasAgg(figure)
    return figure


def plot_mcc_bars(table: pd.DataFrame, png: str | Path, svg: str | Path, task: str = "",
                  methods: Sequence[str] | None = None):
    """MCC2 (top row) and MCC1 (bottom row) per kingdom x SP type, one column per model, one bar
    per method (colours: ``seqpeft.figure_style.method_styles``). Returns the figure."""
    from seqpeft.figure_style import method_styles

    styles = method_styles(table["method"].unique(), methods)
    models = list(dict.fromkeys(table["model"]))
    width = max(8, (0.6 * len(_cells(table)) + 2) * len(models) + 3)
    figure = _figure(min(width, 24), 7)
    axes = figure.subplots(2, len(models), squeeze=False, sharey="row")
    names = {"mcc2": "MCC2: type vs all other proteins", "mcc1": "MCC1: type vs proteins without SP"}
    for column, model in enumerate(models):
        sub = table[table["model"] == model]
        for row, metric in enumerate(("mcc2", "mcc1")):
            axis = axes[row][column]
            _grouped_bars(axis, sub, metric, styles)
            axis.set_title(f"model: {model}: {names[metric]}", fontsize=8)
            if column == 0:
                axis.set_ylabel(f"{metric.upper()} (mean ± sd over folds)", fontsize=8)
            axis.set_xlabel("kingdom / SP type / runs defining the cell", fontsize=7)
    figure.suptitle(f"{task + ': ' if task else ''}signal-peptide type detection per kingdom x SP type", x=0.02, ha="left")
    _legend(figure, styles, table)
    _save(figure, png, svg)
    return figure


def plot_cleavage_sites(table: pd.DataFrame, png: str | Path, svg: str | Path, task: str = "",
                        methods: Sequence[str] | None = None):
    """Cleavage-site precision (left) and recall (right) at w = 0 per kingdom x type, one row per
    model. Returns the figure."""
    from seqpeft.figure_style import method_styles

    styles = method_styles(table["method"].unique(), methods)
    models = list(dict.fromkeys(table["model"]))
    figure = _figure(min(max(12, 1.2 * len(_cells(table)) + 4), 24), 4.2 * len(models) + 0.6)
    axes = figure.subplots(len(models), 2, squeeze=False, sharey=True)
    for row, model in enumerate(models):
        sub = table[table["model"] == model]
        for column, (metric, title) in enumerate((("cs_precision_w0", "precision"), ("cs_recall_w0", "recall"))):
            axis = axes[row][column]
            _grouped_bars(axis, sub, metric, styles)
            axis.set_title(f"model: {model}: cleavage-site {title}, w = 0", fontsize=8)
            axis.set_ylabel(f"cleavage-site {title} (mean ± sd over folds)", fontsize=8)
            axis.yaxis.set_tick_params(labelleft=True)
            axis.set_xlabel("kingdom / SP type / runs defining the cell", fontsize=7)
            axis.set_ylim(0, 1.05)
    figure.suptitle(f"{task + ': ' if task else ''}cleavage sites, exact residue (w = 0)", x=0.02, ha="left")
    _legend(figure, styles, table)
    _save(figure, png, svg)
    return figure


def plot_task_figures(table_csv: str | Path, task: str, outputs: dict[str, Path], methods: Sequence[str] | None = None):
    """Both figures of one task from ``signalp_table.csv`` (outputs: mcc_png/svg, cs_png/svg)."""
    table = pd.read_csv(table_csv)
    table = table[table["task"] == task]
    if table.empty:
        raise SeqpeftInputError(table_csv, f"has no rows for task {task!r}.", fix="rerun the signalp_table rule.")
    return (plot_mcc_bars(table, outputs["mcc_png"], outputs["mcc_svg"], task, methods),
            plot_cleavage_sites(table, outputs["cs_png"], outputs["cs_svg"], task, methods))
