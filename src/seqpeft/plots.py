"""Figures for the benchmark: cost-vs-score Pareto plots and dev MCC over training time.

Figures are built with ``matplotlib.figure.Figure`` and the Agg canvas directly (never pyplot), so
no global backend is switched and no figure is left open; matplotlib is imported inside the
functions to keep ``import seqpeft.plots`` light. Each figure is saved as PNG (150 dpi) and SVG
(text kept as text, no timestamp) through :func:`seqpeft.atomic.atomic_file`.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from seqpeft.atomic import atomic_file
from seqpeft.errors import SeqpeftInputError

# axis name -> (summary column, axis label, log scale)
AXES: dict[str, tuple[str, str, bool]] = {
    "params": ("trainable_params", "Trainable parameters (count, log scale)", True),
    "memory": ("peak_memory_mb", "Peak memory (MB)", False),
    "time": ("train_seconds", "Training time (s)", False),
}
AXIS_TITLES = {"params": "trainable parameters", "memory": "peak memory", "time": "training time"}
MARKERS = ("o", "s", "^", "D", "v", "P", "X", "*", "h", "<", ">", "p")
LINESTYLES = ("-", "--", ":", "-.")
# candidate label positions around a point: (dx, dy) in points, horizontal and vertical alignment
LABEL_OFFSETS = (
    (8, 0, "left", "center"), (-8, 0, "right", "center"),
    (6, 6, "left", "bottom"), (6, -6, "left", "top"), (-6, 6, "right", "bottom"), (-6, -6, "right", "top"),
    (0, 9, "center", "bottom"), (0, -9, "center", "top"),
    (10, 14, "left", "bottom"), (10, -14, "left", "top"), (-10, 14, "right", "bottom"), (-10, -14, "right", "top"),
)


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


def _new_figure(width: float = 8.0, height: float = 5.2):
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def _save_figure(fig, out_png: str | Path, out_svg: str | Path) -> None:
    """Save ``fig`` as PNG (150 dpi) and SVG, each atomically; SVG keeps text as ``<text>``
    elements and carries no date, so reruns give identical files."""
    import matplotlib

    with matplotlib.rc_context({"svg.fonttype": "none", "svg.hashsalt": "seqpeft"}):
        with atomic_file(out_png) as tmp:
            fig.savefig(tmp, format="png", dpi=150, metadata={"Software": None})
        with atomic_file(out_svg) as tmp:
            fig.savefig(tmp, format="svg", metadata={"Date": None})


def _styles(names: Sequence[str], palette: Sequence[Any]) -> dict[str, Any]:
    return {name: palette[i % len(palette)] for i, name in enumerate(sorted(set(names)))}


def _colours(methods: Sequence[str]) -> dict[str, Any]:
    import matplotlib

    n = len(set(methods))
    cmap = matplotlib.colormaps["tab10" if n <= 10 else "tab20"]
    return _styles(methods, [cmap(i) for i in range(cmap.N)])


def _label_points(fig, ax, xs, ys, sds, labels, colours, step=((), ())) -> None:
    """Write each label next to its point at the first candidate offset that overlaps no marker,
    error bar, segment of the ``step`` line or earlier label and stays inside the axes (else at
    the offset with fewest overlaps)."""
    from matplotlib.transforms import Bbox

    fig.canvas.draw()  # run the layout once, then freeze it so label positions stay valid
    fig.set_layout_engine("none")
    renderer = fig.canvas.get_renderer()
    pt = fig.dpi / 72.0
    obstacles = []
    for x, y, sd in zip(xs, ys, sds):
        px, py = ax.transData.transform((x, y))
        obstacles.append(Bbox.from_extents(px - 7 * pt, py - 7 * pt, px + 7 * pt, py + 7 * pt))
        if sd > 0:
            low, high = ax.transData.transform([(x, y - sd), (x, y + sd)])[:, 1]
            obstacles.append(Bbox.from_extents(px - 3 * pt, low, px + 3 * pt, high))
    sx, sy = list(step[0]), list(step[1])
    corners = []  # vertices of a where="post" step line
    for i in range(len(sx)):
        corners.append((sx[i], sy[i]))
        if i + 1 < len(sx):
            corners.append((sx[i + 1], sy[i]))
    for a, b in zip(corners, corners[1:]):  # the step line's horizontal and vertical segments
        (x0, y0), (x1, y1) = ax.transData.transform([a, b])
        obstacles.append(Bbox.from_extents(min(x0, x1) - pt, min(y0, y1) - pt, max(x0, x1) + pt, max(y0, y1) + pt))
    inside = ax.get_window_extent(renderer)
    for x, y, text, colour in sorted(zip(xs, ys, labels, colours), key=lambda t: (t[0], -t[1])):
        best = None
        for dx, dy, ha, va in LABEL_OFFSETS:
            note = ax.annotate(text, (x, y), xytext=(dx, dy), textcoords="offset points",
                               fontsize=8, color=colour, ha=ha, va=va)
            box = note.get_window_extent(renderer)
            clashes = sum(box.overlaps(other) for other in obstacles)
            clashes += 0 if inside.contains(box.x0, box.y0) and inside.contains(box.x1, box.y1) else 1
            if best is None or clashes < best[0]:
                if best is not None:
                    best[1].remove()
                best = (clashes, note, box)
            else:
                note.remove()
            if clashes == 0:
                break
        obstacles.append(best[2])


def _require_columns(frame: pd.DataFrame, columns: Sequence[str], path: Path, fix: str) -> None:
    missing = [c for c in columns if c not in frame.columns]
    if missing:
        raise SeqpeftInputError(path, f"missing column(s): {', '.join(missing)}.", fix=fix)


# --------------------------------------------------------------------------------------------
# Pareto plot


def plot_pareto(summary_csv: str | Path, task: str, axis: str, out_png: str | Path, out_svg: str | Path) -> None:
    """Test MCC (mean ± sd over partitions) against a cost for each model x method of ``task``.

    ``axis`` is ``"params"`` (trainable parameters, log x), ``"memory"`` (peak memory, MB) or
    ``"time"`` (training seconds). Colour marks the method, marker shape the model; each point is
    labelled with its method, and the Pareto front (cheapest for its score) is drawn as a step line.
    """
    summary_csv = Path(summary_csv)
    if axis not in AXES:
        raise SeqpeftInputError(
            None, f"unknown Pareto axis {axis!r}.", fix=f"Use one of: {', '.join(AXES)}."
        )
    column, xlabel, log_x = AXES[axis]
    summary = pd.read_csv(summary_csv)
    _require_columns(summary, ["task", "model", "method", "test_mcc", column], summary_csv,
                     fix="Regenerate it with seqpeft.aggregate.write_summary.")
    for key in ("task", "model", "method"):
        summary[key] = summary[key].astype(str)
    tasks = sorted(summary["task"].unique())
    if task not in tasks:
        raise SeqpeftInputError(summary_csv, f"no runs for task {task!r}.", fix=f"Use one of: {', '.join(tasks)}.")
    runs = summary[summary["task"] == task]

    grouped = (
        runs.groupby(["model", "method"], sort=True)
        .agg(x=(column, "mean"), y=("test_mcc", "mean"), sd=("test_mcc", "std"))
        .reset_index()
    )
    finite = np.isfinite(grouped["x"]) & np.isfinite(grouped["y"])
    if log_x:
        finite &= grouped["x"] > 0
    grouped = grouped[finite].reset_index(drop=True)

    if axis == "memory" and "memory_device" in runs.columns:  # CPU RSS and CUDA peaks differ
        devices = sorted(runs["memory_device"].dropna().astype(str).unique())
        if devices:
            xlabel = f"Peak memory (MB, {'/'.join(devices)})"

    from matplotlib.lines import Line2D
    from matplotlib.patches import Patch

    fig = _new_figure()
    ax = fig.add_subplot()
    colours = _colours(runs["method"])
    markers = _styles(runs["model"], MARKERS)
    for row in grouped.itertuples():
        ax.errorbar(row.x, row.y, yerr=0.0 if math.isnan(row.sd) else row.sd, marker=markers[row.model],
                    linestyle="none", color=colours[row.method], markersize=7, capsize=3, elinewidth=1,
                    zorder=3)

    front = pareto_front(list(zip(grouped["x"], grouped["y"])))
    if front:
        fx, fy = grouped["x"].to_numpy()[front], grouped["y"].to_numpy()[front]
        ax.step(fx, fy, where="post", color="black", linewidth=1.5, alpha=0.6, zorder=2)
        ax.scatter(fx, fy, s=190, facecolors="none", edgecolors="black", linewidths=1.2, zorder=4)
    if grouped.empty:
        ax.text(0.5, 0.5, "no runs with finite values", transform=ax.transAxes, ha="center", va="center")

    if log_x:
        ax.set_xscale("log")
    ax.margins(x=0.12, y=0.12)
    ax.set_xlabel(xlabel)
    ax.set_ylabel("Test MCC (mean ± sd over partitions)")
    ax.set_title(f"{task}: test MCC vs {AXIS_TITLES[axis]}")
    ax.grid(True, alpha=0.3)

    handles = [Patch(facecolor=c, label=m) for m, c in colours.items()]
    handles += [Line2D([], [], linestyle="", marker=mk, color="0.35", label=f"model: {m}")
                for m, mk in markers.items()]
    handles.append(Line2D([], [], color="black", alpha=0.6, marker="o", markerfacecolor="none",
                          markersize=10, label="Pareto front"))
    fig.legend(handles=handles, loc="outside right upper", fontsize=8, title="method / model")

    _label_points(fig, ax, grouped["x"], grouped["y"], grouped["sd"].fillna(0.0), grouped["method"],
                  [colours[m] for m in grouped["method"]], step=(fx, fy) if front else ((), ()))
    _save_figure(fig, out_png, out_svg)


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


def plot_mcc_over_time(history_files: Sequence[str | Path], task: str, out_png: str | Path, out_svg: str | Path) -> None:
    """Dev MCC against training seconds for every run of ``task``: one thin line per run,
    coloured by method, line style by model, one legend entry per method/model.

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
        _require_columns(history, ["wall_seconds", "dev_mcc"], file,
                         fix="Re-run the fine-tuning job that writes it.")
        history = history[["wall_seconds", "dev_mcc"]].apply(pd.to_numeric, errors="coerce").dropna()
        runs.append((model, method, history.sort_values("wall_seconds", kind="stable")))
    if not runs:
        found = sorted({_run_from_path(Path(f))[0] for f in history_files})
        raise SeqpeftInputError(None, f"no history.csv for task {task!r}.",
                                fix=f"Tasks with histories: {', '.join(found) or 'none'}.")

    fig = _new_figure()
    ax = fig.add_subplot()
    colours = _colours([method for _, method, _ in runs])
    styles = _styles([model for model, _, _ in runs], LINESTYLES)
    labelled = set()
    for model, method, history in sorted(runs, key=lambda r: (r[1], r[0])):
        label = f"{method} ({model})" if (method, model) not in labelled else None
        labelled.add((method, model))
        ax.plot(history["wall_seconds"], history["dev_mcc"], color=colours[method],
                linestyle=styles[model], linewidth=1.0, alpha=0.8, marker=".", markersize=3, label=label)
    ax.set_xlabel("Training time (s)")
    ax.set_ylabel("Dev MCC")
    ax.set_title(f"{task}: dev MCC during training (one line per run)")
    ax.grid(True, alpha=0.3)
    fig.legend(loc="outside right upper", fontsize=8, title="method (model)")
    _save_figure(fig, out_png, out_svg)
