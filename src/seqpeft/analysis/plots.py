"""Figures for the benchmark: cost-vs-score Pareto plots and dev MCC over training time.

Figures are built with ``matplotlib.figure.Figure`` and the Agg canvas directly (never pyplot), so
no global backend is switched and no figure is left open; matplotlib is imported inside the
functions to keep ``import seqpeft.analysis.plots`` light. Each figure is saved as PNG (150 dpi) and SVG
(text kept as text, no timestamp) through :func:`seqpeft.util.atomic.atomic_file`.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from seqpeft.util.errors import SeqpeftInputError
from seqpeft.analysis.style import facets, label_points, method_styles, new_figure, save_figure

# axis name -> (summary column, axis label, log scale)
AXES: dict[str, tuple[str, str, bool]] = {
    "params": ("trainable_params", "Trainable parameters (count, log scale)", True),
    "memory": ("peak_memory_mb", "Peak memory (MB)", False),
    "time": ("train_seconds", "Training time (s)", False),
}
AXIS_TITLES = {"params": "trainable parameters", "memory": "peak memory", "time": "training time"}
# What peak_memory_mb measures, by the run's memory_device (see seqpeft.training.assemble: memory_measure).
MEMORY_LABELS = {
    "cuda": "Peak GPU memory (MB, torch.cuda.max_memory_allocated)",
    "cpu": "Peak memory (MB, peak RSS of the run's process, CPU)",
}
# Below this spread a memory axis is noise, not a ranking: no front is drawn. CUDA's allocator
# counts bytes exactly; a CPU process's peak RSS moves by tens of MB between identical runs
# (allocator arenas, thread stacks, page-cache of the loaded libraries).
MEMORY_NOISE_MB = {"cuda": 0.0, "cpu": 50.0}


# --------------------------------------------------------------------------------------------
# Pareto front


def pareto_front(points: Sequence[tuple[float, float]]) -> list[int]:
    """Indices of the points not dominated when minimising x (cost) and maximising y (score).

    A point is dominated when another has x <= and y >= with at least one strict. Identical
    points do not dominate each other, so all copies of a front point are returned. Points with
    a NaN coordinate are never on the front and dominate nothing. The result is ordered by
    increasing x (then decreasing y, then index), which is the order to draw the front in.
    """
    order = sorted(
        (i for i, (x, y) in enumerate(points) if not (math.isnan(x) or math.isnan(y))),
        key=lambda i: (points[i][0], -points[i][1], i),
    )
    front: list[int] = []
    best_y = -math.inf
    for i in order:
        x, y = points[i]
        if y > best_y:
            front.append(i)
            best_y = y
        elif front and (x, y) == tuple(points[front[-1]]):
            front.append(i)
    return front


# --------------------------------------------------------------------------------------------
# shared helpers


def _step_segments(xs, ys) -> list:
    """The horizontal and vertical segments of a where="post" step line through the points."""
    corners = []
    for i in range(len(xs)):
        corners.append((xs[i], ys[i]))
        if i + 1 < len(xs):
            corners.append((xs[i + 1], ys[i]))
    return list(zip(corners, corners[1:]))


def _require_columns(frame: pd.DataFrame, columns: Sequence[str], path: Path, fix: str) -> None:
    missing = [c for c in columns if c not in frame.columns]
    if missing:
        raise SeqpeftInputError(path, f"missing column(s): {', '.join(missing)}.", fix=fix)


# --------------------------------------------------------------------------------------------
# Pareto plot


def _memory_axis(runs: pd.DataFrame) -> tuple[str, float]:
    """The memory axis label and its noise level (MB) from the runs' ``memory_device``."""
    devices = sorted(runs["memory_device"].dropna().astype(str).unique()) if "memory_device" in runs.columns else []
    if len(devices) == 1 and devices[0] in MEMORY_LABELS:
        return MEMORY_LABELS[devices[0]], MEMORY_NOISE_MB[devices[0]]
    if devices:  # CPU RSS and GPU allocations are different quantities: no ranking across them
        return f"Peak memory (MB; mixed measurements: {'/'.join(devices)})", math.inf
    return "Peak memory (MB)", 0.0


def _short_log_ticks(ax, values) -> None:
    """A log axis spanning less than a decade is labelled at the runs' own values (at most three:
    the smallest, the largest and the one nearest the middle), written out in full; rounded ticks
    there (8,200 / 8,800 / 9,400 around markers dodged off 8,768) would show values no run has,
    and matplotlib's minor labels (8.4x10^3 8.6x10^3 ...) run into each other."""
    from matplotlib.ticker import FixedLocator, FuncFormatter, NullFormatter

    values = np.unique(np.asarray(values, dtype=float))
    values = values[values > 0]
    if not len(values) or values.max() / values.min() >= 10:
        return
    middle = values[np.argmin(np.abs(np.log(values) - np.log(np.sqrt(values.min() * values.max()))))]
    ticks = np.unique([values.min(), middle, values.max()])
    if len(ticks) == 3 and min(np.log10(ticks[1] / ticks[0]), np.log10(ticks[2] / ticks[1])) < 0.08:
        ticks = ticks[[0, 2]]  # a middle value too close to an end for its label to fit
    ax.xaxis.set_major_locator(FixedLocator(ticks))
    ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:,.0f}" if v >= 1 and v == round(v) else f"{v:.4g}"))
    ax.xaxis.set_minor_formatter(NullFormatter())
    ax.xaxis.set_minor_locator(FixedLocator([]))


def _dodge(points: pd.DataFrame, log_x: bool) -> pd.DataFrame:
    """Points that share an x value exactly (methods with the same parameter count) are drawn
    side by side, 3% of the axis' extent apart (in decades on a log axis), about a marker's width,
    so that no marker hides another; ``x`` is the drawn position, ``x_true`` the value (the front uses the values)."""
    points = points.assign(x_true=points["x"])
    if len(points) < 2:
        return points
    span = float(points["x"].max() - points["x"].min()) or abs(float(points["x"].iloc[0])) or 1.0
    positive = points["x"][points["x"] > 0]
    decades = max(1.0, math.log10(positive.max() / positive.min())) if len(positive) else 1.0
    for _, group in points.groupby("x_true", sort=False):
        if len(group) < 2:
            continue
        order = group.sort_values("y", kind="stable").index
        for k, index in enumerate(order):
            step = k - (len(order) - 1) / 2
            value = points.at[index, "x_true"]
            points.at[index, "x"] = value * 10 ** (0.03 * decades * step) if log_x else value + 0.03 * span * step
    return points


def _half_bar(row, intervals: bool) -> float:
    """The larger half of a point's error bar, for placing its label clear of it."""
    if intervals:
        low, high = row.test_score_ci_low, row.test_score_ci_high
        return float(max(row.y - low, high - row.y)) if np.isfinite(low) and np.isfinite(high) else 0.0
    return row.sd if row.n > 1 and np.isfinite(row.sd) else 0.0


def plot_pareto(summary_csv: str | Path, task: str, axis: str, out_png: str | Path, out_svg: str | Path,
                methods: Sequence[str] | None = None, table_csv: str | Path | None = None):
    """Test MCC (mean over partitions) against a cost, one panel per model of ``task``.

    With ``table_csv`` (table.csv with intervals, seqpeft.analysis.stats) the error bars are each point's
    interval (t over runs, or bootstrap over test examples); without it, one sd over partitions.

    ``axis`` is ``"params"`` (trainable parameters, log x), ``"memory"`` (peak memory, MB) or
    ``"time"`` (training seconds). Colour and marker mark the method (``method_styles``: the
    same in every figure; ``methods`` is the canonical order). Error bars are one sample sd over
    partitions, drawn only where a point has two or more partitions. The Pareto front (cheapest
    for its score) is computed and drawn per model, and not at all on a memory axis whose spread
    is below the measurement's noise. Returns the figure.
    """
    summary_csv = Path(summary_csv)
    if axis not in AXES:
        raise SeqpeftInputError(
            None, f"unknown Pareto axis {axis!r}.", fix=f"Use one of: {', '.join(AXES)}."
        )
    column, xlabel, log_x = AXES[axis]
    summary = pd.read_csv(summary_csv)
    score = "test_score" if "test_score" in summary else "test_mcc"  # summaries before scores were named: MCC
    _require_columns(summary, ["task", "model", "method", score, column], summary_csv,
                     fix="Regenerate it with seqpeft.analysis.aggregate.write_summary.")
    for key in ("task", "model", "method"):
        summary[key] = summary[key].astype(str)
    tasks = sorted(summary["task"].unique())
    if task not in tasks:
        raise SeqpeftInputError(summary_csv, f"no runs for task {task!r}.", fix=f"Use one of: {', '.join(tasks)}.")
    runs = summary[summary["task"] == task]

    grouped = (
        runs.groupby(["model", "method"], sort=True)
        .agg(x=(column, "mean"), y=(score, "mean"), sd=(score, "std"), n=(score, "count"),
             x_sd=(column, "std"))
        .reset_index()
    )
    intervals = table_csv is not None
    if intervals:
        table = pd.read_csv(table_csv, dtype={"task": str, "model": str, "method": str})
        _require_columns(table, ["task", "model", "method", "test_score_ci_low", "test_score_ci_high"], Path(table_csv),
                         fix="Regenerate it with the aggregate rule (seqpeft.analysis.aggregate.write_summary with predictions).")
        grouped = grouped.merge(table[table["task"] == task][["model", "method", "test_score_ci_low", "test_score_ci_high"]],
                                on=["model", "method"], how="left")
    finite = np.isfinite(grouped["x"]) & np.isfinite(grouped["y"])
    if log_x:
        finite &= grouped["x"] > 0
    grouped = grouped[finite].reset_index(drop=True)
    noise = 0.0
    if axis == "memory":
        xlabel, noise = _memory_axis(runs)

    from matplotlib.lines import Line2D

    styles = method_styles(summary["method"].unique(), methods)
    models = sorted(runs["model"].unique())
    fig = new_figure(width=min(max(4.2 * min(len(models), 3) + 2.4, 8.0), 16), height=4.4 * math.ceil(len(models) / 3) + 0.6)
    axes = facets(fig, len(models))
    placements = []
    notes = []
    for ax, model in zip(axes, models):
        points = _dodge(grouped[grouped["model"] == model].reset_index(drop=True), log_x)
        for row in points.itertuples():
            style = styles[row.method]
            if intervals:
                finite_ci = np.isfinite(row.test_score_ci_low) and np.isfinite(row.test_score_ci_high)
                sd = [[max(row.y - row.test_score_ci_low, 0)], [max(row.test_score_ci_high - row.y, 0)]] if finite_ci else None
            else:
                sd = row.sd if row.n > 1 and np.isfinite(row.sd) else None
            ax.errorbar(row.x, row.y, yerr=sd, marker=style.marker, linestyle="none", color=style.colour,
                        markersize=6, capsize=3 if sd is not None else 0, elinewidth=1, zorder=3)
        segments = []
        spread = float(points["x_true"].max() - points["x_true"].min()) if len(points) else 0.0
        x_noise = max(noise, float(np.nan_to_num(points["x_sd"]).max()) if axis == "memory" and len(points) else 0.0)
        if len(points) and axis == "memory" and spread <= 2 * x_noise:
            ax.text(0.02, 0.02, f"no front: spread {spread:.0f} MB is within the\nmeasurement noise (±{x_noise:.0f} MB)",
                    transform=ax.transAxes, fontsize=7, color="0.3", va="bottom", gid="note")
            notes.append(model)
        elif len(points):
            front = pareto_front(list(zip(points["x_true"], points["y"])))
            fx, fy = points["x"].to_numpy()[front], points["y"].to_numpy()[front]
            ax.step(fx, fy, where="post", color="black", linewidth=1.2, alpha=0.5, zorder=2)
            ax.scatter(fx, fy, s=150, facecolors="none", edgecolors="black", linewidths=1.0, zorder=4)
            segments = _step_segments(list(fx), list(fy))
        else:
            ax.text(0.5, 0.5, "no runs with finite values", transform=ax.transAxes, ha="center", va="center")
        if log_x:
            ax.set_xscale("log")
            _short_log_ticks(ax, points["x_true"])
        ax.margins(x=0.15, y=0.15)
        ax.set_title(f"model: {model}", fontsize=9)
        ax.set_xlabel(xlabel, fontsize=8)
        ax.grid(True, alpha=0.3)
        placements.append((ax, [(r.x, r.y, _half_bar(r, intervals), r.method, styles[r.method].colour)
                                for r in points.itertuples()], segments))
    several = bool(len(grouped)) and int(grouped["n"].max()) > 1
    name = score_title(runs["score"].iloc[0] if "score" in runs and len(runs) else "mcc")
    if intervals:
        axes[0].set_ylabel(f"Test {name} (mean, 95% interval)")  # table.csv says which interval
    else:
        axes[0].set_ylabel(f"Test {name} (mean ± sd over partitions)" if several else f"Test {name} (one partition per run)")
    fig.suptitle(f"{task}: test {name} vs {AXIS_TITLES[axis]} (Pareto front per model)", x=0.02, ha="left")

    handles = [Line2D([], [], linestyle="", marker=st.marker, color=st.colour, label=m) for m, st in styles.items()
               if m in set(runs["method"])]
    if len(notes) < len(models):
        handles.append(Line2D([], [], color="black", alpha=0.5, marker="o", markerfacecolor="none",
                              markersize=9, label="Pareto front"))
    fig.legend(handles=handles, loc="outside right upper", fontsize=8, title="method")
    label_points(fig, placements)
    save_figure(fig, out_png, out_svg)
    return fig


# --------------------------------------------------------------------------------------------
# dev MCC over training time


def _run_from_path(path: Path) -> tuple[str, str, str, str]:
    """``.../runs/{task}/{model}/{method}/{partition}/history.csv`` -> (task, model, method, partition)."""
    parts = path.parts
    if len(parts) < 5:
        raise SeqpeftInputError(
            path, "cannot tell the run from this path.",
            fix="Expected .../runs/{task}/{model}/{method}/{partition}/history.csv.",
        )
    task, model, method, partition = parts[-5:-1]
    return task, model, method, partition


def score_title(score: str) -> str:
    """How figures name a task kind's headline metric (TaskKind.score)."""
    return {"mcc": "MCC", "r2": "R²", "rmse": "RMSE", "mae": "MAE"}.get(str(score), str(score).capitalize())


def _mean_curve(histories: list[pd.DataFrame], column: str = "dev_mcc") -> pd.DataFrame:
    """Per evaluation (its index in each run): mean wall time, mean and sd of dev MCC over the
    partitions that reached it, and how many did (runs that stopped early drop out)."""
    frames = [h.reset_index(drop=True).assign(evaluation=np.arange(len(h))) for h in histories]
    stacked = pd.concat(frames, ignore_index=True)
    return (stacked.groupby("evaluation", sort=True)
            .agg(t=("wall_seconds", "mean"), mcc=(column, "mean"), sd=(column, "std"), n=(column, "count"))
            .reset_index())


def plot_mcc_over_time(history_files: Sequence[str | Path], task: str, out_png: str | Path, out_svg: str | Path,
                       methods: Sequence[str] | None = None, score: str = "mcc"):
    """Dev MCC against training seconds for ``task``: one panel per model, one line per method
    (mean over partitions at each evaluation) with a ± sd band where two or more partitions
    reached that evaluation. Colours are ``method_styles``'. Returns the figure.

    Files belonging to other tasks (by their path) are skipped; none for ``task`` is an error.
    """
    runs = []
    for file in map(Path, history_files):
        run_task, model, method, _ = _run_from_path(file)
        if run_task != task:
            continue
        try:
            history = pd.read_csv(file)
        except (FileNotFoundError, pd.errors.EmptyDataError) as err:
            raise SeqpeftInputError(file, f"cannot read history ({err}).",
                                    fix="Re-run the fine-tuning job that writes it.") from None
        _require_columns(history, ["wall_seconds", f"dev_{score}"], file,
                         fix="Re-run the fine-tuning job that writes it.")
        history = history[["wall_seconds", f"dev_{score}"]].apply(pd.to_numeric, errors="coerce").dropna()
        runs.append((model, method, history.sort_values("wall_seconds", kind="stable")))
    if not runs:
        found = sorted({_run_from_path(Path(f))[0] for f in history_files})
        raise SeqpeftInputError(None, f"no history.csv for task {task!r}.",
                                fix=f"Tasks with histories: {', '.join(found) or 'none'}.")

    from matplotlib.lines import Line2D

    styles = method_styles([method for _, method, _ in runs], methods)
    models = sorted({model for model, _, _ in runs})
    fig = new_figure(width=min(max(4.2 * min(len(models), 3) + 2.4, 8.0), 16), height=3.8 * math.ceil(len(models) / 3) + 0.6)
    axes = facets(fig, len(models))
    partitions = max(sum(1 for m, k, _ in runs if (m, k) == key) for key in {(m, k) for m, k, _ in runs})
    for ax, model in zip(axes, models):
        for method in sorted({k for m, k, _ in runs if m == model}, key=list(styles).index):
            curve = _mean_curve([h for m, k, h in runs if (m, k) == (model, method) and len(h)], f"dev_{score}")
            style = styles[method]
            ax.plot(curve["t"], curve["mcc"], color=style.colour, linewidth=1.1, marker=style.marker, markersize=3)
            band = curve[curve["n"] > 1]
            if len(band):
                ax.fill_between(band["t"], band["mcc"] - band["sd"], band["mcc"] + band["sd"], color=style.colour,
                                alpha=0.15, linewidth=0)
        ax.set_title(f"model: {model}", fontsize=9)
        ax.set_xlabel("Training time (s)", fontsize=8)
        ax.grid(True, alpha=0.3)
    axes[0].set_ylabel(f"Dev {score_title(score)}" + (" (mean ± sd over partitions)" if partitions > 1 else ""))
    fig.suptitle(f"{task}: dev {score_title(score)} during training", x=0.02, ha="left")
    handles = [Line2D([], [], color=st.colour, marker=st.marker, markersize=4, label=m) for m, st in styles.items()]
    fig.legend(handles=handles, loc="outside right upper", fontsize=8, title="method")
    save_figure(fig, out_png, out_svg)
    return fig

