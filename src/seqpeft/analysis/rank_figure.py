"""Demšar's critical-difference diagram of the methods' average ranks (``ranks.csv``, seqpeft.analysis.stats)."""

from __future__ import annotations

import math
from pathlib import Path

import pandas as pd

from seqpeft.analysis.style import new_figure, save_figure
from seqpeft.analysis.plots import _require_columns


def plot_ranks(ranks_csv: str | Path, scope: str, out_png: str | Path, out_svg: str | Path):
    """Demšar's critical-difference diagram of one scope of ``ranks.csv`` (a model, or all models):
    the methods at their average ranks on an axis from 1 (best) to k, the Nemenyi critical
    difference as a bar, and a thick line joining methods whose ranks are not significantly
    different. With fewer than two tasks or three methods the figure says why there is no test."""
    ranks_csv = Path(ranks_csv)
    ranks = pd.read_csv(ranks_csv, keep_default_na=False, na_values=[""])
    _require_columns(ranks, ["scope", "method", "average_rank", "critical_difference", "friedman_p", "n_blocks",
                             "not_different_from"], ranks_csv, fix="Regenerate it with seqpeft.analysis.stats.build_ranks.")
    rows = ranks[(ranks["scope"].astype(str) == scope) & ranks["method"].notna()].sort_values("average_rank")
    fig = new_figure(width=8.0, height=max(2.6, 1.2 + 0.28 * len(rows)))
    ax = fig.add_subplot(1, 1, 1)
    ax.set_axis_off()
    k = len(rows)
    if k == 0:
        ax.text(0.5, 0.5, f"{scope}: no method ran on every task", ha="center", va="center", gid="note")
        save_figure(fig, out_png, out_svg)
        return fig
    first = rows.iloc[0]
    cd, p, blocks = float(first["critical_difference"]), float(first["friedman_p"]), int(first["n_blocks"])
    low, high = 1, max(k, 2)
    ax.set_xlim(low - 0.5, high + 0.5)
    ax.set_ylim(-0.6 - 0.5 * math.ceil(k / 2), 1.6)
    ax.plot([low, high], [0, 0], color="black", linewidth=1)
    for tick in range(low, high + 1):
        ax.plot([tick, tick], [0, 0.08], color="black", linewidth=1)
        ax.text(tick, 0.15, str(tick), ha="center", va="bottom", fontsize=8)
    half = math.ceil(k / 2)
    for index, row in enumerate(rows.itertuples()):
        left = index < half
        level = -0.4 - 0.5 * (index if left else k - 1 - index)
        end = low - 0.3 if left else high + 0.3
        ax.plot([row.average_rank, row.average_rank, end], [0, level, level], color="0.3", linewidth=0.8)
        ax.text(end, level, f"{row.method} ({row.average_rank:.2f})", ha="right" if left else "left", va="center",
                fontsize=8, gid=f"rank-{row.method}")
    if math.isfinite(cd):
        ax.plot([low, low + cd], [1.1, 1.1], color="black", linewidth=2, gid="critical-difference")
        ax.text(low + cd / 2, 1.2, f"CD = {cd:.2f}", ha="center", va="bottom", fontsize=8)
        # cliques: maximal runs of consecutive methods within the critical difference, when Friedman rejects
        if p < 0.05:
            values = rows["average_rank"].to_numpy()
            bars = []
            for start in range(k):
                stop = start
                while stop + 1 < k and values[stop + 1] - values[start] <= cd:
                    stop += 1
                if stop > start and not any(s <= start and stop <= e for s, e in bars):
                    bars.append((start, stop))
            for level, (start, stop) in enumerate(bars):
                ax.plot([values[start] - 0.03, values[stop] + 0.03], [-0.15 - 0.1 * level] * 2, color="black",
                        linewidth=3, gid="clique")
    title = f"{scope}: average rank over {blocks} task(s)"
    if math.isfinite(p):
        title += f"; Friedman p = {p:.3g}" + (" (methods joined by a bar do not differ)" if p < 0.05 else
                                                 " (no method differs significantly)")
    else:
        title += "; no Friedman test (it needs at least 2 tasks and 3 methods)"
    fig.suptitle(title, x=0.02, ha="left", fontsize=9)
    save_figure(fig, out_png, out_svg)
    return fig
