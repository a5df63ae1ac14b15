"""Published numbers beside ours: ``reproduction.csv`` and its figure.

``config/published.csv`` holds one row per published number (experiment, source, task, model,
method, split, metric, kingdom, sp_type, value, spread, note; optionally model_size, the size of
the published model in the source's words). A row is reproduced when the run
matrix has runs of its task x model x method; its value is compared with the mean ± sd over those
runs' partitions:

- sequence-classification metrics (``mcc``, ``accuracy``, ``f1``, ``precision``, ``recall``,
  ``loss``) come from ``summary.csv`` (``{split}_{metric}``);
- signal-peptide metrics (``mcc2``, ``mcc1``, ``cs_precision_w0``, ...) from each run's
  per-kingdom x SP-type table; kingdom and sp_type ``ALL`` is the mean over the run's defined
  cells (PEFT-SP's "Mean MCC2").

A reproduction lies ``within`` the published result when the difference is inside the spread the
source reports or, where it reports none, inside 2 sd of the reproduction (undecided, empty, for a
single run without a published spread). Rows of other experiments (other configs' runs) are left
out. Nothing here needs torch.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from seqpeft.analysis.aggregate import METRIC_KEYS
from seqpeft.util.atomic import atomic_file
from seqpeft.util.errors import SeqpeftInputError

PUBLISHED_COLUMNS = ("experiment", "source", "task", "model", "method", "split", "metric", "kingdom", "sp_type",
                     "value", "spread", "note")
OPTIONAL_COLUMNS = ("model_size",)  # may be absent or empty; reproduction.csv carries it
KEYS = ("experiment", "task", "model", "method", "split", "metric", "kingdom", "sp_type")
SPLITS = ("test", "dev")
ALL = "ALL"


def read_published(path: str | Path) -> pd.DataFrame:
    """The published table, checked row by row (errors name the file, the line and the fix)."""
    path = Path(path)
    try:
        frame = pd.read_csv(path, dtype=str, keep_default_na=False)
    except (OSError, pd.errors.ParserError, UnicodeDecodeError) as error:
        raise SeqpeftInputError(path, f"cannot be read as CSV ({error}).", fix="write it as comma-separated text with a header row.") from None
    missing = [column for column in PUBLISHED_COLUMNS if column not in frame.columns]
    if missing:
        raise SeqpeftInputError(path, f"lacks the column(s) {missing}.", line=1, fix=f"use the header {','.join(PUBLISHED_COLUMNS)}.")
    for column in OPTIONAL_COLUMNS:
        frame[column] = frame[column].fillna("") if column in frame.columns else ""
    for index, row in frame.iterrows():
        line = int(index) + 2  # header is line 1
        for column in ("experiment", "source", "task", "model", "method", "metric"):
            if not row[column].strip():
                raise SeqpeftInputError(path, f"column {column!r} is empty.", line=line,
                                        fix="every published number names its experiment, source, task, model, method and metric.")
        if row["split"] not in SPLITS:
            raise SeqpeftInputError(path, f"split {row['split']!r} is not one of {SPLITS}.", line=line, fix="use test or dev.")
        for column in ("value", "spread"):
            text = row[column].strip()
            if column == "spread" and not text:
                continue
            try:
                number = float(text)
            except ValueError:
                raise SeqpeftInputError(path, f"{column} {text!r} is not a number.", line=line,
                                        fix="write a plain number (MCC as a fraction, not x100).") from None
            if not math.isfinite(number) or (column == "spread" and number < 0):
                raise SeqpeftInputError(path, f"{column} {text!r} is not a finite, non-negative-spread number.", line=line,
                                        fix="write the value, and the spread as a positive half-width.")
    duplicated = frame.duplicated(list(KEYS), keep="first")
    if duplicated.any():
        line = int(np.flatnonzero(duplicated.to_numpy())[0]) + 2
        raise SeqpeftInputError(path, "repeats an earlier row's experiment/task/model/method/split/metric/kingdom/sp_type.",
                                line=line, fix="keep one value per published number.")
    frame["value"] = frame["value"].astype(float)
    frame["spread"] = pd.to_numeric(frame["spread"].replace("", np.nan))
    return frame


def _classification_values(summary: pd.DataFrame) -> dict[tuple, list[float]]:
    values: dict[tuple, list[float]] = {}
    for _, run in summary.iterrows():
        for split in SPLITS:
            for metric in METRIC_KEYS:
                column = f"{split}_{metric}"
                if column in run and pd.notna(run[column]):
                    values.setdefault((run["task"], run["model"], run["method"], split, metric, "", ""), []).append(float(run[column]))
    return values


def _signalp_values(signalp_rows: pd.DataFrame) -> dict[tuple, list[float]]:
    from seqpeft.tasks.signal_peptide.metrics import METRIC_COLUMNS

    values: dict[tuple, list[float]] = {}
    if signalp_rows.empty:
        return values
    for keys, run in signalp_rows.groupby(["task", "model", "method", "partition"], sort=False):
        task, model, method, _ = keys
        for metric in (column for column in METRIC_COLUMNS if column in run):
            cells = run[["kingdom", "sp_type", metric]].dropna()
            for _, cell in cells.iterrows():
                values.setdefault((task, model, method, "test", metric, cell["kingdom"], cell["sp_type"]), []).append(float(cell[metric]))
            if len(cells):
                values.setdefault((task, model, method, "test", metric, ALL, ALL), []).append(float(cells[metric].mean()))
    return values


def build_reproduction(published: pd.DataFrame, summary: pd.DataFrame, signalp_rows: pd.DataFrame | None = None) -> pd.DataFrame:
    """One row per published number whose task x model x method this run matrix has."""
    reproduced = _classification_values(summary)
    reproduced.update(_signalp_values(signalp_rows if signalp_rows is not None else pd.DataFrame()))
    runs = set(zip(summary["task"], summary["model"], summary["method"]))
    records = []
    for _, row in published.iterrows():
        if (row["task"], row["model"], row["method"]) not in runs:
            continue
        values = np.array(reproduced.get((row["task"], row["model"], row["method"], row["split"], row["metric"],
                                          row["kingdom"], row["sp_type"]), []), dtype=float)
        n = len(values)
        mean = float(values.mean()) if n else math.nan
        sd = float(values.std(ddof=1)) if n > 1 else math.nan
        difference = mean - row["value"]
        if not n:
            within = ""
        elif pd.notna(row["spread"]):
            within = bool(abs(difference) <= row["spread"])
        elif n > 1:
            within = bool(abs(difference) <= 2 * sd)
        else:
            within = ""
        records.append({**{key: row[key] for key in PUBLISHED_COLUMNS if key not in ("note", "source")},
                        "published": row["value"], "reproduced_mean": mean, "reproduced_sd": sd, "reproduced_n": n,
                        "difference": difference, "within": within, "model_size": row.get("model_size", ""),
                        "source": row["source"], "note": row["note"]})
    columns = [*KEYS, "published", "spread", "reproduced_mean", "reproduced_sd", "reproduced_n", "difference", "within",
               "model_size", "source", "note"]
    return pd.DataFrame(records, columns=columns)


def write_reproduction(published_csv: str | Path, summary_csv: str | Path, signalp_metrics: Sequence[str | Path],
                       out_csv: str | Path, out_png: str | Path, out_svg: str | Path) -> pd.DataFrame:
    from seqpeft.tasks.signal_peptide.metrics import run_rows

    published = read_published(published_csv)
    summary = pd.read_csv(summary_csv, dtype={"partition": str})
    table = build_reproduction(published, summary, run_rows(signalp_metrics) if signalp_metrics else None)
    if table.empty:
        print(f"[seqpeft] no row of {published_csv} names a task x model x method of this config's runs: "
              "reproduction.csv has only its header")
    with atomic_file(out_csv) as tmp:
        table.to_csv(tmp, index=False, float_format="%.6g")
    plot_reproduction(table, out_png, out_svg)
    return table


def plot_reproduction(table: pd.DataFrame, out_png: str | Path, out_svg: str | Path) -> None:
    """Reproduced (mean ± sd) against published, y = x line, one colour per experiment, rows outside
    the published spread / 2 sd labelled."""
    from seqpeft.analysis.style import new_figure, save_figure

    fig = new_figure(6.4, 6.0)
    ax = fig.add_subplot()
    shown = table[table["reproduced_n"] > 0]
    if shown.empty:
        ax.text(0.5, 0.5, "no published number matches a run of this config", ha="center", va="center", transform=ax.transAxes)
        ax.set_axis_off()
        save_figure(fig, out_png, out_svg)
        return
    low = float(min(shown["published"].min(), (shown["reproduced_mean"] - shown["reproduced_sd"].fillna(0)).min()))
    high = float(max(shown["published"].max(), (shown["reproduced_mean"] + shown["reproduced_sd"].fillna(0)).max()))
    pad = 0.05 * max(high - low, 0.1)
    limits = (low - pad, high + pad)
    ax.plot(limits, limits, color="0.6", linestyle="--", linewidth=1, label="y = x")
    colours = ["#0072B2", "#E69F00", "#009E73", "#D55E00", "#CC79A7", "#56B4E9", "#F0E442", "#000000"]
    for index, (experiment, group) in enumerate(shown.groupby("experiment", sort=True)):
        ax.errorbar(group["published"], group["reproduced_mean"], yerr=group["reproduced_sd"].fillna(0).to_numpy(),
                    fmt="o", markersize=5, capsize=0, color=colours[index % len(colours)], label=experiment)
        for _, row in group[group["within"].astype(str) == "False"].iterrows():
            where = "/".join(part for part in (row["task"], row["model"], row["method"], row["metric"],
                                               row["kingdom"], row["sp_type"]) if part)
            ax.annotate(where, (row["published"], row["reproduced_mean"]), xytext=(4, 4), textcoords="offset points", fontsize=7)
    ax.set_xlim(limits)
    ax.set_ylim(limits)
    ax.set_aspect("equal")
    ax.set_xlabel("published value")
    ax.set_ylabel("reproduced: mean ± sd over partitions")
    ax.set_title("Published vs reproduced (labelled: outside the published spread or 2 sd)")
    ax.legend(loc="lower right", fontsize=8, frameon=False)
    save_figure(fig, out_png, out_svg)
