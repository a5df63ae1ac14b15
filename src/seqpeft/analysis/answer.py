"""The benchmark's answer, generated from its tables: ``answer.md`` and the report's leaderboard.

``answer.md`` says, per model and task, which methods are on the Pareto front of the score
against each cost (trainable parameters, device-hours, peak memory) and what share of full
fine-tuning's score each keeps (with its paired-bootstrap interval) at what share of its costs;
then the ranking across tasks with what is and is not significantly different; then the caveats.
``leaderboard.html`` is one row per model x method, sortable by any column in the browser.
Both are rewritten from table.csv, comparisons.csv, ranks.csv and summary.csv alone.
"""

from __future__ import annotations

import html
import math
from pathlib import Path

import numpy as np
import pandas as pd

from seqpeft.util.atomic import write_text_atomic
from seqpeft.analysis.stats import ALL_MODELS, SCORE, StatsSettings, with_score

# cost columns of the answer: (column of the per-method costs, words, file-name word)
COSTS = (("trainable_params", "trainable parameters", "params"), ("device_hours", "device-hours", "time"),
         ("peak_memory_mb", "peak memory (MB)", "memory"))


def method_costs(summary: pd.DataFrame) -> pd.DataFrame:
    """Per task x model x method: mean score and mean costs over its runs; device-hours are
    training seconds x processes / 3600 (GPU-hours on GPUs)."""
    processes = summary["world_size"].fillna(1) if "world_size" in summary else 1
    summary = with_score(summary).assign(device_hours=summary["train_seconds"] * processes / 3600)
    return (summary.groupby(["task", "model", "method"], sort=True)
            .agg(score=(SCORE, "mean"), trainable_params=("trainable_params", "mean"),
                 device_hours=("device_hours", "mean"), peak_memory_mb=("peak_memory_mb", "mean"),
                 runs=(SCORE, "size"))
            .reset_index())


def pareto_methods(costs: pd.DataFrame, column: str) -> list[str]:
    """Methods no other method beats on score at no higher cost (strictly better on one of them)."""
    front = []
    for row in costs.itertuples():
        dominated = ((costs["score"] >= row.score) & (costs[column] <= getattr(row, column))
                     & ((costs["score"] > row.score) | (costs[column] < getattr(row, column)))).any()
        if not dominated and np.isfinite(row.score):
            front.append(row.method)
    return front


def _fmt(value: float, digits: int = 3) -> str:
    return "n/a" if value is None or not np.isfinite(value) else f"{value:.{digits}f}"


def _pct(value: float) -> str:
    return "n/a" if value is None or not np.isfinite(value) else f"{100 * value:.1f}%"


def _interval(low: float, high: float, percent: bool = False) -> str:
    show = _pct if percent else _fmt
    return "" if not (np.isfinite(low) and np.isfinite(high)) else f" [{show(low)}, {show(high)}]"


def build_answer(table: pd.DataFrame, comparisons: pd.DataFrame, ranks: pd.DataFrame, summary: pd.DataFrame,
                 settings: StatsSettings) -> str:
    """The text of ``answer.md`` (see the module docstring)."""
    level = f"{100 * settings.confidence:g}%"
    costs = method_costs(summary)
    lines = ["# The answer: which method gives the best score per trainable parameter, device-hour and GB", "",
             f"Score: each task kind's headline score (test MCC; mean over runs). Intervals are {level}: "
             f"t over runs where a cell has at least {settings.min_replicates}, else a bootstrap over test "
             "examples (table.csv names which). Shares of full fine-tuning (`" + settings.full + "`) come with "
             "a paired bootstrap interval over the shared test examples (comparisons.csv).", ""]
    for model in sorted(costs["model"].unique()):
        lines += [f"## Model `{model}`", ""]
        for task in sorted(costs[costs["model"] == model]["task"].unique()):
            here = (costs[(costs["model"] == model) & (costs["task"] == task)]
                    .sort_values("score", ascending=False, kind="stable").reset_index(drop=True))
            fronts = {word: pareto_methods(here, column) for column, _, word in COSTS}
            lines += [f"### Task `{task}`", ""]
            full = here[here["method"] == settings.full]
            if full.empty:
                lines += [f"No `{settings.full}` run on this task: shares of full fine-tuning are not available.", ""]
            lines += ["| method | Pareto front on | score | share of full FT's score | share of params | "
                      "share of device-hours | share of memory |", "|---|---|---|---|---|---|---|"]
            for row in here.itertuples():
                on = [word for word, methods in fronts.items() if row.method in methods]
                if not on:
                    continue
                cell = table[(table["task"] == task) & (table["model"] == model) & (table["method"] == row.method)]
                score = _fmt(row.score) + (_interval(cell["test_score_ci_low"].iloc[0], cell["test_score_ci_high"].iloc[0])
                                           if len(cell) and "test_score_ci_low" in cell else "")
                versus = comparisons[(comparisons["task"] == task) & (comparisons["model"] == model)
                                     & (comparisons["method"] == row.method) & (comparisons["reference"] == "full")]
                if row.method == settings.full:
                    share = "100% (reference)"
                elif len(versus) and "share" in versus:
                    v = versus.iloc[0]
                    share = _pct(v["share"]) + _interval(v["share_ci_low"], v["share_ci_high"], percent=True)
                else:
                    share = "n/a"
                ratios = [(getattr(row, column) / full[column].iloc[0]) if len(full) and full[column].iloc[0] else math.nan
                          for column, _, _ in COSTS]
                lines.append(f"| {row.method} | {', '.join(on)} | {score} | {share} | "
                             + " | ".join(_pct(r) for r in ratios) + " |")
            lines.append("")
    lines += ["## Ranking across tasks", "",
              "Average rank of the score over tasks (1 = best), Friedman test, Nemenyi critical difference (CD) "
              "at alpha = 0.05; figures/ranks_<model>.png draws it.", ""]
    for scope, part in ranks.groupby("scope", sort=False):
        part = part[part["method"].notna() & (part["method"].astype(str) != "")]
        title = "all models (blocks: task x model)" if scope == ALL_MODELS else f"model `{scope}`"
        if part.empty:
            lines += [f"- {title}: no method ran on every task.", ""]
            continue
        first = part.iloc[0]
        order = ", ".join(f"{r.method} ({r.average_rank:.2f})" for r in part.sort_values("average_rank").itertuples())
        lines.append(f"- {title}, {int(first['n_blocks'])} task(s): {order}.")
        if not np.isfinite(first["friedman_p"]):
            lines.append("  No test: the Friedman test needs at least 2 tasks and 3 methods.")
        elif not first["friedman_significant"]:
            lines.append(f"  Friedman p = {first['friedman_p']:.3g}: no method's rank differs significantly.")
        else:
            apart = []
            methods = list(part["method"])
            for r in part.itertuples():
                same = set(str(r.not_different_from).split(";")) if isinstance(r.not_different_from, str) else set()
                apart += [f"{r.method} < {m}" for m in methods
                          if m != r.method and m not in same
                          and r.average_rank < float(part[part["method"] == m]["average_rank"].iloc[0])]
            lines.append(f"  Friedman p = {first['friedman_p']:.3g}, CD = {first['critical_difference']:.2f}; "
                         f"significantly better rank: {', '.join(apart) or 'none'}; all other pairs do not differ.")
        left = [text for text in (first.get("left_out_methods"), first.get("left_out_blocks")) if isinstance(text, str) and text]
        if left:
            lines.append(f"  Left out (not run on every task): {'; '.join(text.replace(';', ', ') for text in left)}.")
        lines.append("")
    significant = comparisons[(comparisons["reference"] == "full") & comparisons["significant"].fillna(False).astype(bool)]
    lines += ["## Within each task: significant differences from full fine-tuning", ""]
    if significant.empty:
        lines += ["None.", ""]
    for r in significant.itertuples():
        lines.append(f"- {r.task} / {r.model}: {r.method} {'above' if r.difference > 0 else 'below'} "
                     f"{settings.full} by {r.difference:+.3f}{_interval(r.ci_low, r.ci_high)}.")
    lines += ["", "## Caveats", ""]
    few = table[table["n_runs"] < settings.min_replicates]
    if len(few):
        tasks = ", ".join(f"{task} ({', '.join(sorted(set(part['n_runs'].astype(str))))} run(s))"
                          for task, part in few.groupby("task", sort=True))
        lines.append(f"- {len(few)} of {len(table)} task x model x method cells have fewer than "
                     f"{settings.min_replicates} runs, so their interval is a bootstrap over test examples, which "
                     f"leaves out seed-to-seed variation: tasks {tasks}.")
    missing = sorted({m for text in ranks.get("left_out_methods", pd.Series(dtype=str)).dropna() for m in
                      str(text).split(";") if m})
    if missing:
        lines.append(f"- Methods not run on every task of a model (left out of its ranking): {', '.join(missing)}.")
    no_interval = table[table.get("test_score_ci_method", pd.Series("", index=table.index)) == "none"]
    if len(no_interval):
        lines.append("- No interval (no predictions): " + ", ".join(f"{r.task}/{r.model}/{r.method}"
                                                                      for r in no_interval.itertuples()) + ".")
    if lines[-1] == "":
        lines.append("None.")
    return "\n".join(lines).rstrip() + "\n"


# --------------------------------------------------------------------------------------------
# leaderboard


def build_leaderboard(table: pd.DataFrame, ranks: pd.DataFrame, summary: pd.DataFrame,
                      settings: StatsSettings) -> pd.DataFrame:
    """One row per model x method: the score averaged over its tasks, with an interval combining
    the tasks' intervals as independent normal errors (half-width / z, root-sum-square, / tasks),
    its average rank over the model's tasks, and its mean costs."""
    from scipy import stats

    z = stats.norm.ppf(0.5 + settings.confidence / 2)
    table = with_score(table)
    costs = method_costs(summary)
    rows = []
    for (model, method), part in table.groupby(["model", "method"], sort=True):
        half = (part["test_score_ci_high"] - part["test_score_ci_low"]) / 2 / z
        mean = float(part[f"{SCORE}_mean"].mean())
        se = float(np.sqrt((half ** 2).sum())) / len(part) if half.notna().all() else math.nan
        rank = ranks[(ranks["scope"] == model) & (ranks["method"] == method)]["average_rank"]
        cost = costs[(costs["model"] == model) & (costs["method"] == method)]
        rows.append({"model": model, "method": method, "tasks": len(part), "score": mean,
                     "ci_low": mean - z * se, "ci_high": mean + z * se,
                     "average_rank": float(rank.iloc[0]) if len(rank) else math.nan,
                     "trainable_params": float(cost["trainable_params"].mean()),
                     "device_hours": float((cost["device_hours"] * cost["runs"]).sum()),
                     "peak_memory_mb": float(cost["peak_memory_mb"].max())})
    return pd.DataFrame(rows).sort_values(["model", "score"], ascending=[True, False]).reset_index(drop=True)


_SORT_SCRIPT = """
<script>
// Click a header to sort by it (numbers by value, text alphabetically); click again to reverse.
document.querySelectorAll("table.leaderboard th").forEach(function (th, column) {
  th.addEventListener("click", function () {
    const body = th.closest("table").tBodies[0];
    const ascending = th.dataset.order !== "asc";
    th.closest("tr").querySelectorAll("th").forEach(function (other) { delete other.dataset.order; });
    th.dataset.order = ascending ? "asc" : "desc";
    const key = function (row) {
      const cell = row.cells[column];
      return th.dataset.type === "number" ? parseFloat(cell.dataset.value) : cell.textContent;
    };
    const rows = Array.from(body.rows).sort(function (a, b) {
      const x = key(a), y = key(b);
      if (typeof x === "number") {
        if (isNaN(x) || isNaN(y)) { return isNaN(x) - isNaN(y); }  // missing values last either way
        return ascending ? x - y : y - x;
      }
      return ascending ? x.localeCompare(y) : y.localeCompare(x);
    });
    rows.forEach(function (row) { body.appendChild(row); });
  });
});
</script>
"""

LEADERBOARD_COLUMNS = (("model", "model", None), ("method", "method", None), ("tasks", "tasks", "{:.0f}"),
                       ("score", "score", "{:.3f}"), ("ci_low", "interval low", "{:.3f}"),
                       ("ci_high", "interval high", "{:.3f}"), ("average_rank", "average rank", "{:.2f}"),
                       ("trainable_params", "trainable params", "{:,.0f}"), ("device_hours", "device-hours", "{:.4f}"),
                       ("peak_memory_mb", "peak memory (MB)", "{:.0f}"))


def leaderboard_html(board: pd.DataFrame, confidence: float) -> str:
    """A self-contained page: the leaderboard table and a few lines of script that sort it."""
    head = "".join(f'<th data-type="{"text" if fmt is None else "number"}">{html.escape(title)}</th>'
                   for _, title, fmt in LEADERBOARD_COLUMNS)
    body = []
    for row in board.itertuples(index=False):
        cells = []
        for column, _, fmt in LEADERBOARD_COLUMNS:
            value = getattr(row, column)
            if fmt is None:
                cells.append(f"<td>{html.escape(str(value))}</td>")
            else:
                shown = fmt.format(value) if np.isfinite(value) else "n/a"
                cells.append(f'<td data-value="{value if np.isfinite(value) else "NaN"}">{shown}</td>')
        body.append("<tr>" + "".join(cells) + "</tr>")
    return ("<!DOCTYPE html>\n<html><head><meta charset=\"utf-8\"><title>seqpeft leaderboard</title>\n<style>"
            "table.leaderboard{border-collapse:collapse;font:13px sans-serif}"
            "table.leaderboard th,table.leaderboard td{border:1px solid #ccc;padding:3px 8px;text-align:right}"
            "table.leaderboard th{cursor:pointer;background:#eee}"
            "table.leaderboard th[data-order=asc]::after{content:' \\25B2'}"
            "table.leaderboard th[data-order=desc]::after{content:' \\25BC'}</style></head><body>\n"
            f"<p>One row per model x method: the score averaged over the model's tasks with a "
            f"{100 * confidence:g}% interval, the average rank over those tasks (ranks.csv), and mean costs. "
            "Click a column to sort.</p>\n"
            f'<table class="leaderboard" id="leaderboard"><thead><tr>{head}</tr></thead>\n<tbody>\n'
            + "\n".join(body) + "\n</tbody></table>\n" + _SORT_SCRIPT + "</body></html>\n")


def write_answer(table_csv, comparisons_csv, ranks_csv, summary_csv, answer_md, leaderboard, config: dict | None) -> None:
    """``answer.md`` and ``leaderboard.html`` from the tables, each atomically."""
    settings = StatsSettings.from_config(config)
    table, summary = with_score(pd.read_csv(table_csv)), with_score(pd.read_csv(summary_csv))
    comparisons, ranks = pd.read_csv(comparisons_csv), pd.read_csv(ranks_csv)
    for frame in (table, summary, comparisons, ranks):
        for key in ("task", "model", "method", "scope"):
            if key in frame:
                frame[key] = frame[key].astype(str).where(frame[key].notna(), None)
    write_text_atomic(Path(answer_md), build_answer(table, comparisons, ranks, summary, settings))
    board = build_leaderboard(table, ranks, summary, settings)
    write_text_atomic(Path(leaderboard), leaderboard_html(board, settings.confidence))
