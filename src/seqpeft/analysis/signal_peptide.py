"""Signal-peptide results across runs: the per-kingdom x type table and its two figures.

``signalp_table.csv`` has one row per task x model x method x kingdom x SP type with, for every
metric, the mean, sample sd and count of defined runs (a cell without positives in a test
partition is NaN in that run and left out), plus readable ``mcc2``/``mcc1`` columns
(``0.712 ± 0.013 (n=4)``). Cells undefined in every run are dropped.

The figures are PEFT-SP's (Zeng et al. 2024, ``make_plot.ipynb``): grouped bars of MCC2 and MCC1
per kingdom x SP type with SignalP 6.0's published value as its own bar (from the published
table, where it has the number), and the cleavage-site butterfly at w = 0 (precision to the left,
recall to the right). A value that no run defines, or that is not published, has no bar.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from seqpeft.analysis.aggregate import _format_mean_sd
from seqpeft.util.atomic import atomic_file
from seqpeft.data.readers import KINGDOMS
from seqpeft.util.errors import SeqpeftInputError
from seqpeft.analysis.style import BASELINE_STYLE, MethodStyle, method_styles, new_figure, save_figure
from seqpeft.tasks.signal_peptide.metrics import METRIC_COLUMNS, REPORTED_TYPES, run_rows

KEYS = ("task", "model", "method", "kingdom", "sp_type")


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


# SignalP 6.0's published numbers are the published table's rows with this model and method name.
BASELINE = "signalp6"
BASELINE_LABEL = "SignalP 6.0 (published)"
# The SP types as SignalP 6.0 and PEFT-SP name them; * marks the types PEFT-SP's Table 2 stars as
# having few training samples (Sec/SPIII and Tat/SPII).
PAPER_TYPES = {"SP": "Sec/SPI", "LIPO": "Sec/SPII", "PILIN": "Sec/SPIII*", "TAT": "Tat/SPI", "TATLIPO": "Tat/SPII*"}
MCC_METRICS = {"mcc2": "MCC2: the type against every other protein of the kingdom",
               "mcc1": "MCC1: the type against proteins without a signal peptide only"}
CS_METRICS = {"cs_precision_w0": "precision", "cs_recall_w0": "recall"}
NO_VALUE = "no value: undefined in every run of the method, or not published"


def published_baseline(published_csv: str | Path, task: str) -> dict[tuple[str, str, str], tuple[float, float]]:
    """SignalP 6.0's published per-kingdom x type numbers for ``task`` from the published table
    (rows with model and method ``signalp6``, test split; the ``ALL`` mean rows left out):
    ``(metric, kingdom, sp_type) -> (value, spread or NaN)``. Empty where the file has none."""
    from seqpeft.analysis.reproduction import ALL, read_published

    published = read_published(published_csv)
    rows = published[(published["task"] == task) & (published["model"] == BASELINE) & (published["method"] == BASELINE)
                     & (published["split"] == "test") & ~published["kingdom"].isin(["", ALL])
                     & ~published["sp_type"].isin(["", ALL])]
    twice = rows[rows.duplicated(["metric", "kingdom", "sp_type"], keep=False)]
    if not twice.empty:
        first = twice.iloc[0]
        raise SeqpeftInputError(published_csv, f"gives SignalP 6.0's {first['metric']} of {task} {first['kingdom']} "
                                f"{first['sp_type']} twice (experiments {sorted(set(twice['experiment']))}).",
                                line=int(twice.index[1]) + 2,
                                fix="keep one experiment's SignalP 6.0 numbers per task (the figures draw one baseline).")
    return {(row.metric, row.kingdom, row.sp_type): (float(row.value), float(row.spread)) for row in rows.itertuples()}


@dataclass(frozen=True)
class _Series:
    """One bar per cell: a method's mean over folds (error: sd where n > 1) or the published value
    (error: the published spread, where the source gives one). A cell without a value has no bar."""
    label: str
    style: MethodStyle
    values: dict  # (kingdom, sp_type) -> (value, error half-width or NaN)
    published: bool = False


def _cell_order(cell: tuple[str, str]) -> tuple:
    kingdom, sp_type = cell
    return (KINGDOMS.index(kingdom) if kingdom in KINGDOMS else len(KINGDOMS), kingdom,
            REPORTED_TYPES.index(sp_type) if sp_type in REPORTED_TYPES else len(REPORTED_TYPES), sp_type)


def _cells(table: pd.DataFrame, baseline: dict | None = None, metrics: Sequence[str] = ()) -> list[tuple[str, str]]:
    """The kingdom x type cells of the figure: those the runs define and those with a published
    value of the figure's metrics, in the kingdoms' and types' canonical order."""
    cells = set(zip(table["kingdom"], table["sp_type"]))
    cells |= {(kingdom, sp_type) for metric, kingdom, sp_type in (baseline or {}) if metric in metrics}
    return sorted(cells, key=_cell_order)


def _counts(table: pd.DataFrame, cell: tuple[str, str], metrics: Sequence[str]) -> str:
    """The numbers of runs that define the cell, over the table's model x method pairs (a method
    whose runs never define it counts 0): ``6``, or ``0/6`` when methods differ."""
    rows = table[(table["kingdom"] == cell[0]) & (table["sp_type"] == cell[1])]
    counts = set()
    for metric in metrics:
        defined = {(m, meth): int(n) for m, meth, n in zip(rows["model"], rows["method"], rows[f"{metric}_n"])}
        counts |= {defined.get(pair, 0) for pair in dict.fromkeys(zip(table["model"], table["method"]))}
    return "/".join(map(str, sorted(counts)))


def _type_name(sp_type: str) -> str:
    return f"{PAPER_TYPES[sp_type]} ({sp_type})" if sp_type in PAPER_TYPES else sp_type


def _method_series(table: pd.DataFrame, metric: str, styles: dict[str, MethodStyle]) -> list[_Series]:
    series = []
    for method, style in styles.items():
        sub = table[table["method"] == method]
        if sub.empty:
            continue
        values = {(k, t): (float(m), float(s) if n > 1 else math.nan)
                  for k, t, m, s, n in zip(sub["kingdom"], sub["sp_type"], sub[f"{metric}_mean"], sub[f"{metric}_sd"],
                                           sub[f"{metric}_n"]) if np.isfinite(m)}
        series.append(_Series(method, style, values))
    return series


def _baseline_series(baseline: dict, metric: str) -> _Series:
    values = {(k, t): value for (m, k, t), value in baseline.items() if m == metric}
    return _Series(BASELINE_LABEL, BASELINE_STYLE, values, published=True)


def _draw(axis, cells: list[tuple[str, str]], series: list[_Series], horizontal: bool = False) -> None:
    """Grouped bars: a group per cell, a slot per series (the published baseline first). A value
    of 0 stays visible as a flat bar in the series' colour; a missing value is a grey x at 0, never
    a bar; error bars only where the series has an error for the cell."""
    width = 0.8 / max(len(series), 1)
    positions = np.arange(len(cells), dtype=float)
    bars = axis.barh if horizontal else axis.bar
    for slot, one in enumerate(series):
        at = positions + slot * width - 0.4 + width / 2
        pairs = [one.values.get(cell, (math.nan, math.nan)) for cell in cells]
        values = np.array([pair[0] for pair in pairs], dtype=float)
        errors = np.array([pair[1] for pair in pairs], dtype=float)
        present = np.isfinite(values)
        edge = {"edgecolor": "0.15", "linewidth": 0.6} if one.published else {"edgecolor": "white", "linewidth": 0}
        bars(at[present], values[present], width, color=one.style.colour, hatch=one.style.hatch, label=one.label,
             gid="published-baseline" if one.published else "method-bar", **edge)
        zero = present & (np.abs(np.nan_to_num(values)) < 0.005)
        if zero.any():  # a defined value of 0 (a constant predictor's MCC) stays visible: a flat bar
            flat = axis.vlines if horizontal else axis.hlines
            flat(np.zeros(int(zero.sum())), at[zero] - width / 2, at[zero] + width / 2, colors=one.style.colour,
                 linewidth=2.5, zorder=3, gid="zero-value")
        with_error = present & np.isfinite(errors) & (np.nan_to_num(errors) > 0)
        if with_error.any():
            where = (values[with_error], at[with_error]) if horizontal else (at[with_error], values[with_error])
            spread = {"xerr" if horizontal else "yerr": errors[with_error]}
            axis.errorbar(*where, **spread, fmt="none", ecolor="0.2", elinewidth=0.7, capsize=1.5)
        if (~present).any():
            zeros = np.zeros(int((~present).sum()))
            where = (zeros, at[~present]) if horizontal else (at[~present], zeros)
            axis.scatter(*where, marker="x", s=22, color="0.4", linewidths=1.0, zorder=3, clip_on=False, gid="no-value")


def _legend(figure, series: list[_Series], note: str | None) -> None:
    from matplotlib.lines import Line2D
    from matplotlib.patches import Patch

    handles = [Patch(facecolor=one.style.colour, hatch=one.style.hatch, label=one.label,
                     edgecolor="0.15" if one.published else "white", linewidth=0.6 if one.published else 0)
               for one in series]
    handles.append(Line2D([], [], linestyle="", marker="x", color="0.4", label=NO_VALUE))
    if note:
        handles.append(Patch(facecolor="none", edgecolor="none", label=note))
    figure.legend(handles=handles, loc="outside right upper", fontsize=7, title="method")


def _baseline_note(baseline: dict | None, metrics: Sequence[str], published_name: str | None, task: str) -> str | None:
    """The legend's word on SignalP 6.0 where a published table is configured but holds none of
    the figure's metrics for the task (the figure then has no baseline slot)."""
    if baseline is None or any(metric in metrics for metric, _, _ in baseline):
        return None
    return f"{BASELINE_LABEL}: none for {task or 'this task'} in {published_name or 'the published table'}"


def _series_of(table: pd.DataFrame, metric: str, styles: dict, baseline: dict | None, metrics: Sequence[str]):
    with_baseline = baseline is not None and any(m in metrics for m, _, _ in baseline)
    return ([_baseline_series(baseline, metric)] if with_baseline else []) + _method_series(table, metric, styles)


def plot_mcc_bars(table: pd.DataFrame, png: str | Path, svg: str | Path, task: str = "",
                  methods: Sequence[str] | None = None, baseline: dict | None = None,
                  published_name: str | None = None):
    """MCC2 and MCC1 per kingdom x SP type as PEFT-SP draws them: grouped bars, one per method
    (mean over folds; colours: ``seqpeft.analysis.style.method_styles``), SignalP 6.0's published
    value as its own bar where ``baseline`` (``published_baseline``) has it. One full-width row per
    metric x model (MCC2 rows first). Returns the figure."""
    styles = method_styles(table["method"].unique(), methods)
    models = list(dict.fromkeys(table["model"]))
    metrics = tuple(MCC_METRICS)
    cells = _cells(table, baseline, metrics)
    slots = max(len(_series_of(table[table["model"] == model], "mcc2", styles, baseline, metrics)) for model in models)
    figure = new_figure(min(max(9.0, len(cells) * max(0.72, 0.05 * slots + 0.25) + 4.0), 30.0),
                        3.4 * len(metrics) * len(models) + 0.8)
    axes = figure.subplots(len(metrics) * len(models), 1, squeeze=False, sharey=True)[:, 0]
    for row, (metric, (column, model)) in enumerate((m, c) for m in metrics for c in enumerate(models)):
        axis, sub = axes[row], table[table["model"] == model]
        series = _series_of(sub, metric, styles, baseline, metrics)
        _draw(axis, cells, series)
        axis.set_xticks(np.arange(len(cells)), [f"{k}\n{PAPER_TYPES.get(t, t)}\n{t}\nn={_counts(sub, (k, t), [metric])}"
                                                for k, t in cells], fontsize=7)
        axis.set_xlim(-0.6, len(cells) - 0.4)
        axis.axhline(0, color="black", linewidth=0.5)
        axis.grid(True, axis="y", alpha=0.3)
        unpublished = bool(series) and series[0].published and not series[0].values
        title = f"model: {model}: {MCC_METRICS[metric]}"
        axis.set_title(title + (f" (no SignalP 6.0 {metric.upper()} published)" if unpublished else ""), fontsize=8)
        axis.set_ylabel(f"{metric.upper()} (mean ± sd over folds)", fontsize=8)
        axis.set_xlabel("kingdom / SP type (SignalP 6.0 name; seqpeft code), n = runs defining the cell", fontsize=7)
    figure.suptitle(f"{task + ': ' if task else ''}signal-peptide type detection per kingdom x SP type (MCC2 and MCC1)",
                    x=0.02, ha="left")
    _legend(figure, _series_of(table, "mcc2", styles, baseline, metrics), _baseline_note(baseline, metrics, published_name, task))
    save_figure(figure, png, svg)
    return figure


def plot_cleavage_sites(table: pd.DataFrame, png: str | Path, svg: str | Path, task: str = "",
                        methods: Sequence[str] | None = None, baseline: dict | None = None,
                        published_name: str | None = None):
    """PEFT-SP's cleavage-site butterfly at w = 0: precision to the left of the centre line,
    recall to the right, one horizontal bar per method (and SignalP 6.0 where published) per
    kingdom x SP type, a precision/recall pair per model. Returns the figure."""
    styles = method_styles(table["method"].unique(), methods)
    models = list(dict.fromkeys(table["model"]))
    metrics = tuple(CS_METRICS)
    cells = _cells(table, baseline, metrics)
    slots = max(len(_series_of(table[table["model"] == model], metrics[0], styles, baseline, metrics)) for model in models)
    figure = new_figure(min(2.6 + 6.4 * len(models) + 3.4, 30.0), max(4.8, len(cells) * (0.055 * slots + 0.22) + 1.6))
    ratios = [r for index in range(len(models)) for r in ([0.15] if index else []) + [1, 1]]
    grid = figure.add_gridspec(1, len(ratios), width_ratios=ratios)
    first = None
    column = 0
    for index, model in enumerate(models):
        if index:
            figure.add_subplot(grid[0, column]).set_visible(False)  # a gap between models' butterflies
            column += 1
        sub = table[table["model"] == model]
        for metric, name in CS_METRICS.items():
            axis = figure.add_subplot(grid[0, column], sharey=first)
            column += 1
            series = _series_of(sub, metric, styles, baseline, metrics)
            _draw(axis, cells, series, horizontal=True)
            axis.set_xlim((1.05, -0.03) if name == "precision" else (-0.03, 1.05))  # precision grows to the left
            axis.axvline(0, color="black", linewidth=0.5)
            axis.grid(True, axis="x", alpha=0.3)
            unpublished = bool(series) and series[0].published and not series[0].values
            axis.set_title(f"model: {model}: cleavage-site {name}"
                           + (f"\n(no SignalP 6.0 {name} published)" if unpublished else ""), fontsize=8)
            axis.set_xlabel(f"{'← ' if name == 'precision' else ''}{name} at w = 0 (mean ± sd over folds)"
                            f"{' →' if name == 'recall' else ''}", fontsize=8)
            if first is None:
                first = axis
                axis.set_yticks(np.arange(len(cells)), [f"{k} {_type_name(t)}\nn={_counts(table, (k, t), metrics)}"
                                                        for k, t in cells], fontsize=7)
                axis.set_ylim(len(cells) - 0.5, -0.5)  # the first cell at the top
                axis.set_ylabel("kingdom / SP type (n = runs defining the cell)", fontsize=8)
            else:
                axis.tick_params(labelleft=False)
    figure.suptitle(f"{task + ': ' if task else ''}cleavage sites, exact residue (w = 0): precision ← | → recall",
                    x=0.02, ha="left")
    _legend(figure, _series_of(table, metrics[0], styles, baseline, metrics), _baseline_note(baseline, metrics, published_name, task))
    save_figure(figure, png, svg)
    return figure


def plot_task_figures(table_csv: str | Path, task: str, outputs: dict[str, Path], methods: Sequence[str] | None = None,
                      published: str | Path | None = None):
    """Both figures of one task from ``signalp_table.csv`` (outputs: mcc_png/svg, cs_png/svg), with
    SignalP 6.0's published numbers from ``published`` (the config's ``published:`` table) where
    it has them for the task."""
    table = pd.read_csv(table_csv)
    table = table[table["task"] == task]
    if table.empty:
        raise SeqpeftInputError(table_csv, f"has no rows for task {task!r}.", fix="rerun the signalp_table rule.")
    baseline = published_baseline(published, task) if published else None
    name = Path(published).name if published else None
    return (plot_mcc_bars(table, outputs["mcc_png"], outputs["mcc_svg"], task, methods, baseline, name),
            plot_cleavage_sites(table, outputs["cs_png"], outputs["cs_svg"], task, methods, baseline, name))
