"""answer.md and the leaderboard from small synthetic tables; the leaderboard sorted in headless Chromium."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from helpers import job_stats
from seqpeft.analysis.answer import build_answer, build_leaderboard, leaderboard_html, pareto_methods
from seqpeft.analysis.stats import StatsSettings, build_ranks

SETTINGS = StatsSettings(confidence=0.95, bootstrap=200, seed=0, min_replicates=3, full="full")
# task -> method -> (score, trainable params, seconds, memory)
RUNS = {
    "t1": {"full": (0.90, 50_000, 100, 900), "lora": (0.88, 800, 60, 500), "frozen": (0.40, 66, 30, 400),
           "ia3": (0.85, 900, 70, 520)},
    "t2": {"full": (0.80, 50_000, 90, 900), "lora": (0.82, 800, 50, 500), "frozen": (0.30, 66, 30, 400),
           "ia3": (0.70, 900, 65, 520)},
}


def _tables():
    summary = pd.DataFrame([{"task": task, "model": "m", "method": method, "partition": "0", "test_mcc": v[0],
                             "trainable_params": v[1], "train_seconds": v[2], "peak_memory_mb": v[3], "world_size": 1}
                            for task, methods in RUNS.items() for method, v in methods.items()])
    table = summary.rename(columns={"test_mcc": "test_mcc_mean"}).assign(
        n_runs=1, test_score_ci_low=lambda f: f["test_mcc_mean"] - 0.05, test_score_ci_high=lambda f: f["test_mcc_mean"] + 0.05,
        test_score_ci_method="bootstrap")
    comparisons = pd.DataFrame([{"task": task, "model": "m", "method": method, "reference": "full",
                                 "reference_method": "full", "difference": v[0] - methods["full"][0],
                                 "ci_low": v[0] - methods["full"][0] - 0.03, "ci_high": v[0] - methods["full"][0] + 0.03,
                                 "significant": abs(v[0] - methods["full"][0]) > 0.03,
                                 "share": v[0] / methods["full"][0], "share_ci_low": v[0] / methods["full"][0] - 0.04,
                                 "share_ci_high": v[0] / methods["full"][0] + 0.04}
                                for task, methods in RUNS.items() for method, v in methods.items() if method != "full"])
    ranks = build_ranks(table, ["m"], 0.05)
    return summary, table, comparisons, ranks


def test_pareto_methods_are_the_undominated_ones():
    costs = pd.DataFrame({"method": ["full", "lora", "frozen", "ia3"], "score": [0.9, 0.88, 0.4, 0.85],
                          "trainable_params": [50_000, 800, 66, 900]})
    assert pareto_methods(costs, "trainable_params") == ["full", "lora", "frozen"]  # ia3: lora is better and cheaper


def test_answer_names_fronts_shares_ranks_and_caveats():
    summary, table, comparisons, ranks = _tables()
    text = build_answer(table, comparisons, ranks, summary, SETTINGS)
    assert text.startswith("# The answer")
    t1 = text[text.index("### Task `t1`"):text.index("### Task `t2`")]
    rows = {line.split("|")[1].strip(): line for line in t1.splitlines() if line.startswith("| ") and "---" not in line}
    assert set(rows) == {"method", "full", "lora", "frozen"}  # ia3 is on no front
    # lora keeps 0.88 / 0.90 = 97.8% of full's score at 800 / 50,000 = 1.6% of its parameters
    assert "97.8% [93.8%, 101.8%]" in rows["lora"] and "| 1.6% |" in rows["lora"] and "params" in rows["lora"]
    assert "100% (reference)" in rows["full"]
    # ranks over 2 tasks: lora (1.5), full (1.5), ia3 (3), frozen (4); Friedman with 2 blocks is not significant
    assert "- model `m`, 2 task(s): full (1.50), lora (1.50), ia3 (3.00), frozen (4.00)." in text
    assert "no method's rank differs significantly" in text
    assert "- t1 / m: frozen below full by -0.500 [-0.530, -0.470]." in text
    assert "8 of 8 task x model x method cells have fewer than 3 runs" in text and "tasks t1 (1 run(s)), t2" in text
    assert t1.index("| full |") < t1.index("| lora |") < t1.index("| frozen |")  # by score


def test_leaderboard_averages_tasks_and_combines_intervals():
    summary, table, _, ranks = _tables()
    board = build_leaderboard(table, ranks, summary, SETTINGS).set_index("method")
    lora = board.loc["lora"]
    assert lora["score"] == pytest.approx(0.85) and lora["tasks"] == 2 and lora["average_rank"] == 1.5
    # two independent half-widths of 0.05: the mean's is sqrt(2) * 0.05 / 2
    assert lora["ci_high"] - lora["score"] == pytest.approx(math.sqrt(2) * 0.05 / 2)
    assert lora["device_hours"] == pytest.approx(110 / 3600) and lora["peak_memory_mb"] == 500


def test_leaderboard_sorts_by_every_column_in_headless_chromium(tmp_path):
    from test_report import _chromium
    from seqpeft.analysis.answer import LEADERBOARD_COLUMNS
    from seqpeft.analysis.report_view import table_after_clicks

    chromium = _chromium()
    summary, table, _, ranks = _tables()
    board = build_leaderboard(table, ranks, summary, SETTINGS)
    board.loc[board["method"] == "ia3", "average_rank"] = np.nan  # a missing value sorts last both ways
    page = tmp_path / "leaderboard.html"
    page.write_text(leaderboard_html(board, 0.95))
    columns = list(LEADERBOARD_COLUMNS)
    # each header twice (ascending, then descending), all in one page load
    views = iter(table_after_clicks(page, [index for index in range(len(columns)) for _ in (0, 1)], chromium))
    for index, (column, _, fmt) in enumerate(columns):
        for clicks, ascending in ((1, True), (2, False)):
            rows = next(views)
            shown = [row[1] for row in rows]  # the method column
            if fmt is None:
                expected = sorted(board[column].astype(str), reverse=not ascending)
                assert [row[index] for row in rows] == expected, (column, clicks)
                continue
            values = board.set_index("method")[column]
            finite = values.dropna().sort_values(ascending=ascending, kind="stable")
            got = [values[m] for m in shown]
            assert [v for v in got if not np.isnan(v)] == list(finite), (column, clicks)
            assert all(np.isnan(v) for v in got[len(finite):]), (column, clicks)


# ---- on the session's demo run (tests/conftest.py: demo_run) ----


@pytest.mark.slow
def test_demo_predictions_reproduce_every_runs_score(demo_run):
    """Every run's predictions_test.parquet gives its summary score back, for every task kind."""
    from seqpeft.tasks import task_kind

    summary = pd.read_csv(demo_run.results / "summary.csv", dtype={"partition": str})
    for row in summary.itertuples():
        frame = pd.read_parquet(demo_run.results / "runs" / row.task / row.model / row.method / row.partition
                                / "predictions_test.parquet")
        assert task_kind(row.task_kind).score_predictions(frame) == pytest.approx(row.test_score, abs=1e-9), row


@pytest.mark.slow
def test_demo_statistics_answer_and_rank_figures(demo_run):
    results = demo_run.results
    table = pd.read_csv(results / "table.csv")
    assert (table["test_score_ci_method"] == "bootstrap").all()  # one partition per demo run
    # a percentile bootstrap interval need not hold the estimate: resampled examples repeat, and a
    # rank correlation near 1 (demo_gc's Spearman 0.9995) drops on ties, so its interval can sit
    # just below; within 1e-3 of it
    low, high, mean = table["test_score_ci_low"], table["test_score_ci_high"], table["test_score_mean"]
    assert ((low <= high) & (low - 1e-3 <= mean) & (mean <= high + 1e-3)).all()
    mcc_scored = table[~table["task"].isin(["demo_gc", "demo_sp_length"])]
    assert ((mcc_scored["test_score_ci_low"] <= mcc_scored["test_score_mean"])
            & (mcc_scored["test_score_mean"] <= mcc_scored["test_score_ci_high"])).all()
    comparisons = pd.read_csv(results / "comparisons.csv")
    # the planted motif: full fine-tuning learns it, the frozen backbone with a trained head does not
    frozen = comparisons[(comparisons["task"] == "demo_tf") & (comparisons["model"] == "tiny_llama_dna")
                         & (comparisons["method"] == "frozen") & (comparisons["reference"] == "full")].iloc[0]
    assert frozen["significant"] and frozen["ci_high"] < 0, frozen
    ranks = pd.read_csv(results / "ranks.csv")
    models = sorted(set(pd.read_csv(results / "summary.csv")["model"]))
    assert set(ranks["scope"]) == {*models, "all_models"}
    llama = ranks[ranks["scope"] == "tiny_llama_dna"]
    # the ranking keeps the blocks (tasks) that ran every ranked method: demo_tf's 11 methods, and
    # each other task of the model that ran all of them
    summary = pd.read_csv(results / "summary.csv")
    per_task = summary[summary["model"] == "tiny_llama_dna"].groupby("task")["method"].apply(set)
    ranked = set(llama["method"])
    assert ranked == per_task["demo_tf"] and len(ranked) == 11
    assert set(llama["n_blocks"]) == {sum(ranked <= methods for methods in per_task)}
    for scope in [*models, "all_models"]:
        assert (results / "figures" / f"ranks_{scope}.png").stat().st_size > 10_000
    answer = (results / "answer.md").read_text()
    for model in models:
        assert f"## Model `{model}`" in answer
    assert "## Ranking across tasks" in answer and "## Caveats" in answer
    assert "- demo_tf / tiny_llama_dna: frozen below full by" in answer
    board = (results / "leaderboard.html").read_text()
    table_pairs = {(r.model, r.method) for r in table.itertuples()}
    assert board.count("<tr><td>") == len(table_pairs)  # one row per model x method


@pytest.mark.slow
def test_demo_pareto_axes_show_only_run_values(demo_run, tmp_path):
    """No Pareto axis of the demo labels a value between runs: where runs share an x value (the
    DSP variants of tiny_llama_bytes, 8,768 parameters each) the axis keeps that value."""
    from seqpeft.analysis.plots import plot_pareto

    results = demo_run.results
    summary = pd.read_csv(results / "summary.csv")
    figure = plot_pareto(results / "summary.csv", "demo_tf", "params", tmp_path / "p.png", tmp_path / "p.svg",
                         table_csv=results / "table.csv")
    figure.canvas.draw()
    for ax in figure.axes:
        if not ax.get_visible() or not ax.get_title():
            continue
        model = ax.get_title().removeprefix("model: ")
        values = set(summary[(summary["task"] == "demo_tf") & (summary["model"] == model)]["trainable_params"])
        low, high = ax.get_xlim()
        ticks = [tick for tick, label in zip(ax.xaxis.get_majorticklocs(), ax.xaxis.get_majorticklabels())
                 if low <= tick <= high and label.get_text()]
        if max(values) / min(values) < 10:  # a short axis: labelled at the runs' values only
            assert ticks and set(ticks) <= values, (model, ticks, values)
        else:  # a long one: decades only
            assert all(math.log10(tick) == round(math.log10(tick)) for tick in ticks), (model, ticks)
    bytes_model = summary[(summary["task"] == "demo_tf") & (summary["model"] == "tiny_llama_bytes")]
    assert set(bytes_model["trainable_params"]) == {8768}


@pytest.mark.slow
def test_demo_answer_regenerates_alone_from_the_tables(demo_run):
    """Deleting answer.md and asking for it reruns the answer rule only: no run, no other table."""
    results = demo_run.results
    target = results / "answer.md"
    before = target.read_text()
    others = {p: p.stat().st_mtime_ns for p in results.rglob("*") if p.is_file() and p != target
              and ".snakemake" not in p.parts and p.name not in ("leaderboard.html", "answer.log")}
    target.unlink()
    output = demo_run.snakemake(target.relative_to(demo_run.workdir))
    assert target.read_text() == before
    assert job_stats(output) == {"answer": 1}
    assert [p for p, mtime in others.items() if p.exists() and p.stat().st_mtime_ns != mtime] == []
