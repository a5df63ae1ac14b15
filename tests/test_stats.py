"""seqpeft.analysis.stats and seqpeft.analysis.answer on small synthetic summaries, against hand computations."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from seqpeft.analysis.aggregate import build_table
from seqpeft.training.metrics import fast_mcc
from seqpeft.analysis.stats import (ALL_MODELS, StatsSettings, add_intervals, build_comparisons, build_ranks,
                           friedman_nemenyi, t_interval)
from seqpeft.tasks import task_kind

SETTINGS = StatsSettings(confidence=0.95, bootstrap=400, seed=0, min_replicates=3, full="full")
SCORE = task_kind("sequence_classification").score_predictions


def test_fast_mcc_is_sklearns():
    from sklearn.metrics import matthews_corrcoef

    rng = np.random.default_rng(1)
    for classes in (2, 3, 5):
        for size in (2, 7, 300):
            truth, predicted = rng.integers(0, classes, size), rng.integers(0, classes, size)
            assert fast_mcc(truth, predicted) == pytest.approx(matthews_corrcoef(truth, predicted), abs=1e-12)
    assert fast_mcc(np.ones(5, int), np.ones(5, int)) == 0.0


def test_t_interval_from_known_replicates():
    # mean 0.7, sd 0.1, n 3: half-width t(0.975, 2) * 0.1 / sqrt(3) = 4.302653 * 0.057735 = 0.248414
    low, high = t_interval([0.6, 0.7, 0.8], 0.95)
    assert low == pytest.approx(0.7 - 0.248414, abs=1e-6) and high == pytest.approx(0.7 + 0.248414, abs=1e-6)


def test_friedman_and_nemenyi_on_a_4x3_table():
    scores = pd.DataFrame({"a": [0.9, 0.8, 0.7, 0.95], "b": [0.8, 0.85, 0.6, 0.9], "c": [0.5, 0.6, 0.65, 0.7]},
                          index=["t1", "t2", "t3", "t4"])
    # ranks per task (1 = best): t1 a1 b2 c3; t2 b1 a2 c3; t3 a1 c2 b3; t4 a1 b2 c3
    # rank sums a 5, b 8, c 11; chi2 = 12 / (N k (k+1)) * sum R_j^2 - 3 N (k+1) = 52.5 - 48 = 4.5
    result = friedman_nemenyi(scores, 0.05)
    assert result["average"].to_dict() == {"a": 1.25, "b": 2.0, "c": 2.75}
    assert result["chi2"] == pytest.approx(12 / (4 * 3 * 4) * (25 + 64 + 121) - 3 * 4 * 4)
    assert result["p"] == pytest.approx(math.exp(-4.5 / 2))  # chi-square with 2 df
    # Demšar (2006), Table 5: q_0.05 for k = 3 is 2.343; CD = q sqrt(k (k+1) / (6 N))
    assert result["cd"] == pytest.approx(2.343 * math.sqrt(3 * 4 / (6 * 4)), abs=2e-3)


def _frame(truth, predicted):
    return pd.DataFrame({"example_id": np.arange(len(truth)), "label": truth, "predicted": predicted})


def _summary_and_frames(scores_by_method: dict[str, list[tuple[np.ndarray, np.ndarray]]], task="t", model="m"):
    rows, frames = [], {}
    for method, runs in scores_by_method.items():
        for partition, (truth, predicted) in enumerate(runs):
            frame = _frame(truth, predicted)
            frames[(task, model, method, str(partition))] = frame
            rows.append({"task": task, "model": model, "method": method, "partition": str(partition),
                         "test_mcc": SCORE(frame), "test_score": SCORE(frame), "score": "mcc", "test_accuracy": 0.0, "test_f1": 0.0, "trainable_params": 10,
                         "peak_memory_mb": 1.0, "train_seconds": 1.0, "task_kind": "sequence_classification"})
    return pd.DataFrame(rows), frames


def test_intervals_t_over_three_runs_and_bootstrap_below():
    rng = np.random.default_rng(0)
    truth = rng.integers(0, 2, 200)
    noisy = [(truth, np.where(rng.random(200) < q, 1 - truth, truth)) for q in (0.1, 0.2, 0.3)]
    summary, frames = _summary_and_frames({"three": noisy, "one": noisy[:1]})
    table = add_intervals(build_table(summary), summary, frames, {"sequence_classification": SCORE}, SETTINGS)
    three = table[table["method"] == "three"].iloc[0]
    expected = t_interval(summary[summary["method"] == "three"]["test_mcc"], 0.95)
    assert three["test_score_ci_method"] == "t"
    assert (three["test_score_ci_low"], three["test_score_ci_high"]) == pytest.approx(expected)
    one = table[table["method"] == "one"].iloc[0]
    assert one["test_score_ci_method"] == "bootstrap"
    mcc = summary[summary["method"] == "one"]["test_mcc"].iloc[0]
    # a 10% flip rate on 200 examples: MCC ~0.8 with a bootstrap half-width of ~0.08
    assert one["test_score_ci_low"] < mcc < one["test_score_ci_high"]
    assert 0.04 < (one["test_score_ci_high"] - one["test_score_ci_low"]) / 2 < 0.15
    assert one["test_score"].startswith(f"{mcc:.3f} [")


def test_paired_comparison_separates_a_better_method_and_not_an_identical_one():
    rng = np.random.default_rng(2)
    truth = rng.integers(0, 2, 300)
    good = np.where(rng.random(300) < 0.05, 1 - truth, truth)
    poor = np.where(rng.random(300) < 0.35, 1 - truth, truth)
    summary, frames = _summary_and_frames({"full": [(truth, good)], "same": [(truth, good)], "frozen": [(truth, poor)]})
    comparisons = build_comparisons(summary, frames, {"sequence_classification": SCORE}, SETTINGS)
    versus_full = comparisons[comparisons["reference"] == "full"].set_index("method")
    assert versus_full.loc["same", "difference"] == 0 and not versus_full.loc["same", "significant"]
    assert (versus_full.loc["same", "ci_low"], versus_full.loc["same", "ci_high"]) == (0, 0)
    frozen = versus_full.loc["frozen"]
    assert frozen["difference"] == pytest.approx(SCORE(_frame(truth, poor)) - SCORE(_frame(truth, good)))
    assert frozen["significant"] and frozen["ci_high"] < 0 and frozen["p_value"] < 0.01
    assert frozen["share"] == pytest.approx(frozen["score"] / frozen["reference_score"])
    assert frozen["share_ci_low"] < frozen["share"] < frozen["share_ci_high"] < 1
    best = comparisons[comparisons["reference"] == "best"]
    assert set(best["reference_method"]) == {"full"} and set(best["method"]) == {"frozen", "same"}


def test_ranks_per_model_and_over_all_models_leave_out_incomplete_methods():
    rows = []
    for task, values in {"t1": (0.9, 0.8, 0.5), "t2": (0.8, 0.85, 0.6), "t3": (0.7, 0.6, 0.65), "t4": (0.95, 0.9, 0.7)}.items():
        for method, value in zip("abc", values):
            rows.append({"task": task, "model": "m", "method": method, "test_mcc_mean": value})
    rows.append({"task": "t1", "model": "m", "method": "d", "test_mcc_mean": 0.99})  # ran on one task only
    ranks = build_ranks(pd.DataFrame(rows), ["m"], 0.05)
    own = ranks[ranks["scope"] == "m"].set_index("method")
    assert own["average_rank"].to_dict() == {"a": 1.25, "b": 2.0, "c": 2.75}
    assert set(own["left_out_methods"]) == {"d"} and set(own["n_blocks"]) == {4}
    assert not own["friedman_significant"].any()  # p = 0.105
    assert own.loc["a", "not_different_from"] == "b;c"
    assert set(ranks[ranks["scope"] == ALL_MODELS]["method"]) == {"a", "b", "c"}


def test_critical_difference_diagram_draws_ranks_cd_and_cliques(tmp_path):
    from seqpeft.analysis.rank_figure import plot_ranks

    # a always first, b second, c third on 10 tasks: Friedman rejects; CD = 2.343 sqrt(12 / 60) = 1.048,
    # so a-b and b-c (1 apart) do not differ, a-c (2 apart) does
    rows = [{"task": f"t{i}", "model": "m", "method": method, "test_mcc_mean": value}
            for i in range(10) for method, value in (("a", 0.9), ("b", 0.8), ("c", 0.7))]
    ranks = build_ranks(pd.DataFrame(rows), ["m"], 0.05)
    ranks.to_csv(tmp_path / "ranks.csv", index=False)
    own = ranks[ranks["scope"] == "m"].set_index("method")
    assert own["friedman_significant"].all() and own.loc["a", "not_different_from"] == "b"
    figure = plot_ranks(tmp_path / "ranks.csv", "m", tmp_path / "r.png", tmp_path / "r.svg")
    ax = figure.axes[0]
    labels = {text.get_gid(): text for text in ax.texts if text.get_gid()}
    assert [labels[f"rank-{m}"].get_text() for m in "abc"] == ["a (1.00)", "b (2.00)", "c (3.00)"]
    (cd,) = [line for line in ax.get_lines() if line.get_gid() == "critical-difference"]
    assert np.diff(cd.get_xdata())[0] == pytest.approx(2.343 * math.sqrt(3 * 4 / 60), abs=2e-3)
    cliques = sorted(tuple(np.round(line.get_xdata(), 2)) for line in ax.get_lines() if line.get_gid() == "clique")
    assert cliques == [(0.97, 2.03), (1.97, 3.03)]
    assert "Friedman p" in figure.get_suptitle() and (tmp_path / "r.png").stat().st_size > 5_000


def test_a_kind_without_prediction_hooks_is_refused():
    """Every run writes predictions_test.parquet and the statistics resample its score, so a task
    kind must say how (a kind merged without them fails at import, naming what is missing)."""
    from seqpeft.core.registry import REPLICATES, TaskKind, register_task_kind

    kind = TaskKind("no_predictions", "x", REPLICATES, tokenize=None, objective=None, evaluate_file=None,
                    predict_file=None)
    with pytest.raises(ValueError, match="must declare prediction_columns and score_predictions"):
        register_task_kind(kind)


def _resample_frames(rng):
    """One predictions mapping per kind with a vectorised resample score: several classes, three
    labels, and two regression targets with ties (and a constant one, whose Spearman is undefined)."""
    n = 60
    truth = rng.integers(0, 4, n)
    classification = {"example_id": np.arange(n), "label": truth,
                      "predicted": np.where(rng.random(n) < 0.6, truth, rng.integers(0, 4, n))}
    labels = {f"label_label{j}": rng.integers(0, 2, n) for j in range(3)}
    multi = {"example_id": np.arange(n), **labels,
             **{f"predicted_label{j}": np.where(rng.random(n) < 0.7, labels[f"label_label{j}"], 1 - labels[f"label_label{j}"])
                for j in range(3)}}
    target = rng.integers(0, 8, n).astype(float)  # ties
    regression = {"example_id": np.arange(n), "target_target0": target,
                  "predicted_target0": np.round(target + rng.normal(0, 2, n)), "target_target1": np.full(n, 3.0),
                  "predicted_target1": rng.normal(size=n)}
    types = np.array(["NO_SP", "SP", "LIPO", "TAT", "TATLIPO", "PILIN"])
    true_types = types[rng.choice(6, n, p=[0.5, 0.2, 0.1, 0.1, 0.05, 0.05])]
    signal_peptide = {"example_id": np.arange(n), "kingdom": np.array(["EUKARYA", "ARCHAEA", "POSITIVE", "NEGATIVE"])[
        rng.integers(0, 4, n)], "sp_type": true_types,
        "sp_type_name": np.where(rng.random(n) < 0.6, true_types, types[rng.integers(0, 6, n)])}
    return {"sequence_classification": classification, "multi_label_classification": multi, "regression": regression,
            "signal_peptide": signal_peptide}


@pytest.mark.parametrize("kind", ["sequence_classification", "multi_label_classification", "regression",
                                  "signal_peptide"])
def test_vectorised_resample_scores_equal_the_kinds_score_of_each_resample(kind):
    """The statistics score a thousand resamples per run at once through a kind's score_resamples;
    each must be what score_predictions gives that resample (including resamples of 2 examples,
    where a correlation can be undefined)."""
    from seqpeft.analysis.stats import Columns, KindScorer, resample_scores

    rng = np.random.default_rng(3)
    entry = task_kind(kind)
    columns = Columns({key: np.asarray(value) for key, value in _resample_frames(rng)[kind].items()})
    for size in (60, 2):
        picks = rng.integers(0, 60, (300, size))
        fast = resample_scores(KindScorer(entry.score_predictions, entry.score_resamples), columns, picks)
        slow = resample_scores(entry.score_predictions, columns, picks)
        assert np.allclose(fast, slow, atol=1e-12, equal_nan=True), (fast[:5], slow[:5])
        assert np.isfinite(slow).any()


def test_comparisons_and_intervals_are_the_same_with_and_without_the_vectorised_score():
    """The vectorised path changes the speed, not the numbers: the same resamples, the same results."""
    from seqpeft.analysis.stats import KindScorer, bootstrap_mean_score, paired_bootstrap

    rng = np.random.default_rng(0)
    entry = task_kind("sequence_classification")

    def frame(accuracy):
        truth = rng.integers(0, 3, 500)
        return pd.DataFrame({"example_id": np.arange(500), "label": truth,
                             "predicted": np.where(rng.random(500) < accuracy, truth, (truth + 1) % 3)})

    pairs = [(frame(0.7), frame(0.8)) for _ in range(3)]
    fast, slow = KindScorer(entry.score_predictions, entry.score_resamples), entry.score_predictions
    vectorised, looped = paired_bootstrap(pairs, fast, SETTINGS), paired_bootstrap(pairs, slow, SETTINGS)
    assert vectorised == pytest.approx(looped, abs=1e-12)
    assert vectorised["ci_low"] < vectorised["difference"] < vectorised["ci_high"] < 0
    runs = [frame(0.7) for _ in range(2)]
    assert bootstrap_mean_score(runs, fast, SETTINGS) == pytest.approx(bootstrap_mean_score(runs, slow, SETTINGS), abs=1e-12)


def test_resamples_drawn_in_chunks_give_the_same_numbers(monkeypatch):
    """Resamples are drawn and scored in chunks that bound memory; the chunk size changes nothing."""
    import seqpeft.analysis.stats as stats

    rng = np.random.default_rng(1)
    entry = task_kind("regression")
    frames = _resample_frames(rng)["regression"]
    run = pd.DataFrame({key: value for key, value in frames.items() if not key.endswith("target1")})
    other = run.assign(predicted_target0=run["predicted_target0"] + rng.normal(0, 1, len(run)))
    scorer = stats.KindScorer(entry.score_predictions, entry.score_resamples)
    whole = stats.paired_bootstrap([(run, other), (other, run)], scorer, SETTINGS), \
        stats.bootstrap_mean_score([run, other], scorer, SETTINGS)
    monkeypatch.setattr(stats, "CHUNK_CELLS", 7 * len(run))  # 7 resamples a chunk
    chunked = stats.paired_bootstrap([(run, other), (other, run)], scorer, SETTINGS), \
        stats.bootstrap_mean_score([run, other], scorer, SETTINGS)
    assert chunked[0] == pytest.approx(whole[0], abs=1e-12) and chunked[1] == pytest.approx(whole[1], abs=1e-12)
