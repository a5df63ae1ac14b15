"""The statistics of the benchmark's answer: intervals, paired comparisons and ranks across tasks.

Every number is the task kind's score (``test_score`` in ``summary.csv``: MCC, Spearman for regression; each kind recomputes it
from a run's ``predictions_test.parquet`` with ``TaskKind.score_predictions``), so a kind with
another headline score (regression: Spearman) slots in unchanged.

- Intervals (``table.csv``): a t-interval over replicate seeds / folds where a task x model x
  method has at least 3 runs, else a percentile bootstrap over the test examples of its runs.
- Paired comparisons (``comparisons.csv``): every method against full fine-tuning and against the
  best method of the task x model, the score difference with a paired bootstrap interval (the same
  resampled test examples for both methods, and the shared partitions resampled too).
- Ranks (``ranks.csv``): per model and over all models, the methods' average ranks over tasks,
  the Friedman test and the Nemenyi critical difference (scipy's studentized range).

Nothing here imports torch; the bootstrap is seeded, so a rerun gives the same table. A kind
with ``TaskKind.score_resamples`` scores all of a run's resamples in one vectorised call, with
the same resamples and results as one ``score_predictions`` call each.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass

import numpy as np
import pandas as pd

from seqpeft.training.metrics import mean_of_defined

SCORE = "test_score"  # the kind's own score in summary.csv and table.csv (MCC; Spearman for regression)


def with_score(frame: pd.DataFrame) -> pd.DataFrame:
    """A summary or table written before scores were named holds MCC only: its ``test_mcc*``
    columns are the score's."""
    frame = frame.copy()
    for suffix in ("", "_mean", "_sd", "_n"):
        if f"{SCORE}{suffix}" not in frame and f"test_mcc{suffix}" in frame:
            frame[f"{SCORE}{suffix}"] = frame[f"test_mcc{suffix}"]
    return frame
RUN_KEYS = ("task", "model", "method", "partition")
Frames = Mapping[tuple[str, str, str, str], pd.DataFrame]  # run -> its predictions_test frame
Scorer = Callable[[pd.DataFrame], float]  # a kind's score_predictions (a KindScorer adds its score_resamples)
# resamples scored at once: rows of example indices times examples, at most this many cells
CHUNK_CELLS = 4_000_000


@dataclass(frozen=True)
class KindScorer:
    """A task kind's score of one predictions frame, and (``resamples``, optional) of many
    resamples of it at once: ``TaskKind.score_predictions`` and ``score_resamples``."""

    one: Callable[[object], float]
    resamples: Callable[[object, np.ndarray], np.ndarray] | None = None

    def __call__(self, frame) -> float:
        return self.one(frame)


def resample_scores(score: Scorer, columns: "Columns", picks: np.ndarray) -> np.ndarray:
    """The score of each resample (row of ``picks``: example indices into ``columns``): the kind's
    vectorised ``score_resamples`` where it has one, else one call of its score per resample."""
    many = getattr(score, "resamples", None)
    if many is None:
        return np.array([score(columns.take(row)) for row in picks], dtype=float)
    return np.asarray(many(columns, picks), dtype=float)


def resample_chunks(rng: np.random.Generator, count: int, size: int):
    """``count`` resamples of ``size`` example indices, drawn in chunks of at most CHUNK_CELLS
    indices (the numbers of one ``rng.integers(0, size, (count, size))`` call, without holding
    them all: a test set of 100,000 examples would take 800 MB per 1,000 resamples)."""
    rows = max(1, CHUNK_CELLS // max(size, 1))
    for start in range(0, count, rows):
        yield rng.integers(0, size, (min(rows, count - start), size))


@dataclass(frozen=True)
class StatsSettings:
    """``statistics:`` of the config (defaults in the schema)."""

    confidence: float
    bootstrap: int
    seed: int
    min_replicates: int  # the t-interval needs at least this many runs
    full: str  # the method the others are compared with

    @classmethod
    def from_config(cls, config: dict | None) -> "StatsSettings":
        from seqpeft.config.schema import with_defaults

        values = with_defaults((config or {}).get("statistics"), "statistics")
        return cls(float(values["confidence"]), int(values["bootstrap"]), int(values["seed"]),
                   int(values["min_replicates"]), str(values["full"]))


def load_predictions(paths) -> tuple[dict, dict[str, Scorer]]:
    """Each run's ``predictions_test.parquet`` keyed by its run (read from the ``metrics.json``
    beside it), and the score function of each task kind among them."""
    import json
    from pathlib import Path

    from seqpeft.util.errors import SeqpeftInputError
    from seqpeft.tasks import task_kind

    frames, scorers = {}, {}
    for path in map(Path, paths):
        metrics_path = path.parent / "metrics.json"
        try:
            metrics = json.loads(metrics_path.read_text())
            frame = pd.read_parquet(path)
        except (OSError, ValueError) as err:
            raise SeqpeftInputError(path, f"cannot read this run's predictions and metrics ({err}).",
                                    fix="re-run the fine-tuning job that writes them.") from None
        frames[tuple(str(metrics[key]) for key in RUN_KEYS)] = frame
        kind = str(metrics["task_kind"])
        entry = task_kind(kind, where=metrics_path)
        scorers[kind] = KindScorer(entry.score_predictions, entry.score_resamples)
    return frames, scorers


def t_interval(values, confidence: float) -> tuple[float, float]:
    """Student-t interval of the mean of ``values`` (NaNs left out)."""
    from scipy import stats

    values = np.asarray(values, dtype=float)
    values = values[~np.isnan(values)]
    if len(values) < 2:
        return math.nan, math.nan
    sem = stats.sem(values)
    if sem == 0:
        return float(values.mean()), float(values.mean())
    low, high = stats.t.interval(confidence, len(values) - 1, loc=values.mean(), scale=sem)
    return float(low), float(high)


def _percentile(draws: np.ndarray, confidence: float) -> tuple[float, float]:
    draws = draws[~np.isnan(draws)]
    if not len(draws):
        return math.nan, math.nan
    tail = (1 - confidence) / 2 * 100
    low, high = np.percentile(draws, [tail, 100 - tail])
    return float(low), float(high)


class Columns(dict):
    """A predictions frame as {column: array}: resampled by fancy indexing, thousands of times
    faster than ``DataFrame.iloc``; a kind's ``score_predictions`` reads it like the frame."""

    @classmethod
    def of(cls, frame: pd.DataFrame) -> "Columns":
        return cls({column: frame[column].to_numpy() for column in frame.columns})

    def take(self, indices: np.ndarray) -> "Columns":
        return Columns({column: values[indices] for column, values in self.items()})

    def __len__(self) -> int:
        return len(next(iter(self.values()))) if super().__len__() else 0


def _example_sets(frames: list[pd.DataFrame]) -> list[int]:
    """Which runs share a test set (the same example ids in the same order): one resample each."""
    keys: dict[tuple, int] = {}
    return [keys.setdefault(tuple(frame["example_id"].tolist()), len(keys)) for frame in frames]


def bootstrap_mean_score(frames: list[pd.DataFrame], score: Scorer, settings: StatsSettings) -> tuple[float, float]:
    """Percentile interval of the mean score over ``frames`` (runs), resampling test examples;
    runs on the same test set (replicate seeds) share each resample."""
    rng = np.random.default_rng(settings.seed)
    sets = _example_sets(frames)
    sizes = {s: len(frame) for s, frame in zip(sets, frames)}
    columns = [Columns.of(frame) for frame in frames]
    scores = np.full((settings.bootstrap, len(frames)), math.nan)
    for example_set, size in sizes.items():
        runs = [run for run, s in enumerate(sets) if s == example_set]
        done = 0
        for picks in resample_chunks(rng, settings.bootstrap, size):
            for run in runs:
                scores[done:done + len(picks), run] = resample_scores(score, columns[run], picks)
            done += len(picks)
    return _percentile(mean_of_defined(scores.T, settings.bootstrap), settings.confidence)


def add_intervals(table: pd.DataFrame, summary: pd.DataFrame, frames: Frames, scorers: Mapping[str, Scorer],
                  settings: StatsSettings) -> pd.DataFrame:
    """``table.csv`` with ``test_score_ci_low``, ``test_score_ci_high`` and ``test_score_ci_method``
    (``t`` over n >= min_replicates runs, ``bootstrap`` over test examples below, ``none`` where
    neither applies)."""
    table, summary = with_score(table), with_score(summary)
    lows, highs, methods = [], [], []
    for row in table.itertuples():
        runs = summary[(summary["task"] == row.task) & (summary["model"] == row.model) & (summary["method"] == row.method)]
        values = pd.to_numeric(runs[SCORE], errors="coerce").dropna()
        run_frames = [frames[key] for key in _keys(runs) if key in frames]
        if len(values) >= settings.min_replicates:
            (low, high), how = t_interval(values, settings.confidence), "t"
        elif run_frames and len(run_frames) == len(runs):
            (low, high), how = bootstrap_mean_score(run_frames, scorers[_kind(runs)], settings), "bootstrap"
        else:
            (low, high), how = (math.nan, math.nan), "none"
        lows.append(low)
        highs.append(high)
        methods.append(how)
    table["test_score_ci_low"], table["test_score_ci_high"], table["test_score_ci_method"] = lows, highs, methods
    # the readable column: mean [interval] where there is one (the sd stays in test_score_sd)
    table[SCORE] = [text if not np.isfinite(low) else f"{mean:.3f} [{low:.3f}, {high:.3f}]" + (
        f" (n={n})" if n < runs else "") for text, mean, low, high, n, runs in zip(
        table[SCORE], table[f"{SCORE}_mean"], lows, highs, table[f"{SCORE}_n"], table["n_runs"])]
    return table


def _keys(runs: pd.DataFrame) -> list[tuple[str, str, str, str]]:
    return [tuple(str(v) for v in values) for values in runs[list(RUN_KEYS)].itertuples(index=False)]


def _kind(runs: pd.DataFrame) -> str:
    return str(runs["task_kind"].iloc[0])


# --------------------------------------------------------------------------------------------
# paired comparisons


def paired_bootstrap(pairs: list[tuple[pd.DataFrame, pd.DataFrame]], score: Scorer, settings: StatsSettings) -> dict:
    """Difference of mean scores (first minus second) over runs paired by partition, with a paired
    bootstrap: each draw resamples the pairs (when there are several) and, within a pair, the test
    examples both runs share, scoring both runs on the same examples. Also the ratio of the means
    (the share of the second's score the first keeps) and a two-sided bootstrap p-value."""
    aligned = []
    for first, second in pairs:
        shared = first.merge(second[["example_id"]], on="example_id")["example_id"]
        a = first.set_index("example_id").loc[shared].reset_index()
        b = second.set_index("example_id").loc[shared].reset_index()
        aligned.append((Columns.of(a), Columns.of(b)))
    mean_a = float(np.nanmean([score(a) for a, _ in aligned]))
    mean_b = float(np.nanmean([score(b) for _, b in aligned]))
    rng = np.random.default_rng(settings.seed)
    # draw k resamples len(aligned) pairs (with replacement, when there are several), and within
    # each drawn pair its shared test examples, the same ones for both runs
    chosen = (rng.integers(0, len(aligned), (settings.bootstrap, len(aligned))) if len(aligned) > 1
              else np.zeros((settings.bootstrap, 1), dtype=np.int64))
    first, second = np.full(chosen.shape, math.nan), np.full(chosen.shape, math.nan)
    for index, (a, b) in enumerate(aligned):
        slots = chosen == index
        first_scores, second_scores = [], []
        for picks in resample_chunks(rng, int(slots.sum()), len(a)):
            first_scores.append(resample_scores(score, a, picks))
            second_scores.append(resample_scores(score, b, picks))
        if first_scores:
            first[slots], second[slots] = np.concatenate(first_scores), np.concatenate(second_scores)
    fa, fb = mean_of_defined(first.T, len(first)), mean_of_defined(second.T, len(second))
    diffs = fa - fb
    with np.errstate(invalid="ignore", divide="ignore"):
        shares = np.where(fb != 0, fa / np.where(fb != 0, fb, 1.0), math.nan)
    low, high = _percentile(diffs, settings.confidence)
    share_low, share_high = _percentile(shares, settings.confidence)
    valid = diffs[~np.isnan(diffs)]
    p_value = min(1.0, 2 * min(np.mean(valid <= 0), np.mean(valid >= 0))) if len(valid) else math.nan
    return {"score": mean_a, "reference_score": mean_b, "difference": mean_a - mean_b, "ci_low": low, "ci_high": high,
            "share": mean_a / mean_b if mean_b else math.nan, "share_ci_low": share_low, "share_ci_high": share_high,
            "p_value": float(p_value), "n_partitions": len(aligned), "n_examples": int(sum(len(a) for a, _ in aligned))}


def build_comparisons(summary: pd.DataFrame, frames: Frames, scorers: Mapping[str, Scorer],
                      settings: StatsSettings) -> pd.DataFrame:
    """``comparisons.csv``: per task x model, every method against ``full`` (when it ran) and
    against the best method (highest mean score), paired over shared partitions and test examples;
    ``significant`` is an interval excluding 0."""
    rows, full = [], settings.full
    summary = with_score(summary)
    for (task, model), runs in summary.groupby(["task", "model"], sort=True):
        means = runs.groupby("method")[SCORE].mean()
        if means.dropna().empty:
            continue
        references = [("best", str(means.idxmax()))] + ([("full", full)] if full in means.index else [])
        score = scorers[_kind(runs)]
        for reference, ref_method in references:
            ref_runs = runs[runs["method"] == ref_method]
            for method in sorted(means.index):
                if method == ref_method:
                    continue
                own = runs[runs["method"] == method]
                shared = sorted(set(own["partition"].astype(str)) & set(ref_runs["partition"].astype(str)))
                pairs = [(frames.get((task, model, method, p)), frames.get((task, model, ref_method, p))) for p in shared]
                pairs = [(a, b) for a, b in pairs if a is not None and b is not None]
                row = {"task": task, "model": model, "method": method, "reference": reference,
                       "reference_method": ref_method}
                if not pairs:
                    rows.append({**row, "n_partitions": 0})
                    continue
                result = paired_bootstrap(pairs, score, settings)
                result["significant"] = bool(result["ci_low"] > 0 or result["ci_high"] < 0)
                rows.append({**row, **result})
    columns = ["task", "model", "method", "reference", "reference_method", "score", "reference_score", "difference",
               "ci_low", "ci_high", "significant", "p_value", "share", "share_ci_low", "share_ci_high",
               "n_partitions", "n_examples"]
    return pd.DataFrame(rows, columns=columns)


# --------------------------------------------------------------------------------------------
# ranks across tasks


def complete_block(scores: pd.DataFrame) -> tuple[pd.DataFrame, list[str], list[str]]:
    """The largest complete blocks x methods table the Friedman test can use: repeatedly drop the
    method or block with the largest share of missing cells (methods first on ties). Returns the
    table and the dropped methods and blocks (the caveats)."""
    scores = scores.copy()
    dropped_methods, dropped_blocks = [], []
    while scores.size and scores.isna().any().any():
        by_method = scores.isna().mean(axis=0)
        by_block = scores.isna().mean(axis=1)
        if by_method.max() >= by_block.max():
            name = by_method.idxmax()
            dropped_methods.append(str(name))
            scores = scores.drop(columns=name)
        else:
            name = by_block.idxmax()
            dropped_blocks.append(str(name))
            scores = scores.drop(index=name)
    return scores, dropped_methods, dropped_blocks


def friedman_nemenyi(scores: pd.DataFrame, alpha: float) -> dict:
    """Average ranks (1 = best, ties averaged) of the methods (columns) over the blocks (rows),
    the Friedman chi-square and p-value, and the Nemenyi critical difference of average ranks
    (q_alpha of the studentized range with infinite degrees of freedom, over sqrt 2)."""
    from scipy import stats

    blocks, k = scores.shape
    ranks = pd.DataFrame(np.vstack([stats.rankdata(-row) for row in scores.to_numpy()]) if blocks else
                         np.zeros((0, k)), index=scores.index, columns=scores.columns)
    average = ranks.mean(axis=0)
    chi2 = p = cd = math.nan
    if blocks >= 2 and k >= 3:
        chi2, p = stats.friedmanchisquare(*[scores[c].to_numpy() for c in scores.columns])
        q = stats.studentized_range.ppf(1 - alpha, k, np.inf) / math.sqrt(2)
        cd = q * math.sqrt(k * (k + 1) / (6 * blocks))
    return {"average": average, "chi2": float(chi2), "p": float(p), "cd": float(cd), "blocks": blocks}


ALL_MODELS = "all_models"


def build_ranks(table: pd.DataFrame, models: list[str], alpha: float) -> pd.DataFrame:
    """``ranks.csv``: for each model (blocks: its tasks) and over all models (blocks: task x model),
    each method's average rank, the Friedman test, the critical difference, and the methods whose
    average rank is within it (``not_different_from``; all of them where Friedman does not reject)."""
    table = with_score(table)
    rows = []
    for scope in [*models, ALL_MODELS]:
        part = table if scope == ALL_MODELS else table[table["model"] == scope]
        block = part["task"] if scope != ALL_MODELS else part["task"] + " / " + part["model"]
        scores = part.assign(block=block).pivot_table(index="block", columns="method", values=f"{SCORE}_mean",
                                                      aggfunc="first")
        complete, dropped_methods, dropped_blocks = complete_block(scores)
        result = friedman_nemenyi(complete, alpha)
        significant = not math.isnan(result["p"]) and result["p"] < alpha
        average = result["average"].sort_values()
        for method, rank in average.items():
            if significant:
                same = [m for m, r in average.items() if m != method and abs(r - rank) <= result["cd"]]
            else:
                same = [m for m in average.index if m != method]
            rows.append({"scope": scope, "method": method, "average_rank": float(rank), "n_blocks": result["blocks"],
                         "n_methods": len(average), "friedman_chi2": result["chi2"], "friedman_p": result["p"],
                         "critical_difference": result["cd"], "friedman_significant": significant,
                         "not_different_from": ";".join(same), "left_out_methods": ";".join(dropped_methods),
                         "left_out_blocks": ";".join(dropped_blocks)})
        if average.empty:
            rows.append({"scope": scope, "method": "", "n_blocks": 0, "n_methods": 0,
                         "left_out_methods": ";".join(dropped_methods), "left_out_blocks": ";".join(dropped_blocks)})
    return pd.DataFrame(rows)


def write_statistics(summary_csv, table_csv, predictions_files, comparisons_csv, ranks_csv, models: list[str],
                     config: dict | None) -> None:
    """``comparisons.csv`` and ``ranks.csv`` from the summary, the table and the runs' predictions."""
    from pathlib import Path

    from seqpeft.util.atomic import atomic_file

    settings = StatsSettings.from_config(config)
    summary = pd.read_csv(summary_csv, dtype={key: str for key in RUN_KEYS})
    table = pd.read_csv(table_csv, dtype={key: str for key in RUN_KEYS[:3]})
    frames, scorers = load_predictions(predictions_files)
    comparisons = build_comparisons(summary, frames, scorers, settings)
    ranks = build_ranks(table, models, 1 - settings.confidence)
    for frame, path in ((comparisons, comparisons_csv), (ranks, ranks_csv)):
        with atomic_file(Path(path)) as tmp:
            frame.to_csv(tmp, index=False)
