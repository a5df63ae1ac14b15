"""Statistics: the paired bootstrap of one comparisons.csv cell, looped vs vectorised scores.

A cell of ``comparisons.csv`` pairs a method with a reference over 3 replicate runs: 1,000 draws,
each resampling the runs and their shared test examples, both runs scored on the same examples.
The looped contender scores each resample with the kind's ``score_predictions`` (what the
statistics did before ``TaskKind.score_resamples``); the vectorised one with ``score_resamples``.
Test labels are GUE tf/0's real test split (``../shared``); predictions agree with them at 85 %
and 90 % (classification), and a GC-content-like regression target of the same size with ties.
Then the full benchmark's statistics job: the cells of ``config/config.yaml`` (every method of a
task x model against full fine-tuning and against the best) times the vectorised cell time, a
lower bound where test sets are larger than tf/0's (1,000 sequences).

    python benchmarks/bootstrap.py            # 3 repeats, alternating
    python benchmarks/bootstrap.py --quick    # 100 draws, 1 repeat
"""

from __future__ import annotations

import argparse
import csv

import numpy as np
import pandas as pd

from _common import GUE_TF0, REPO, alternate, median, print_table, require


def _frames(kind: str, rng: np.random.Generator) -> list[tuple[pd.DataFrame, pd.DataFrame]]:
    with open(GUE_TF0 / "test.csv", newline="") as handle:
        labels = np.array([int(row["label"]) for row in csv.DictReader(handle)])
    ids = np.arange(len(labels))

    def run(agreement: float) -> pd.DataFrame:
        if kind == "regression":
            target = np.round(rng.normal(50, 6, len(labels)))
            return pd.DataFrame({"example_id": ids, "target_target0": target,
                                 "predicted_target0": target + rng.normal(0, 12 * (1 - agreement), len(labels))})
        return pd.DataFrame({"example_id": ids, "label": labels,
                             "predicted": np.where(rng.random(len(labels)) < agreement, labels, 1 - labels)})

    return [(run(0.85), run(0.90)) for _ in range(3)]


def _cells(config_path) -> int:
    """comparisons.csv rows of a config: per task x model, each method but the reference, twice."""
    import yaml

    from seqpeft.config.jobs import expand_runs

    methods: dict[tuple[str, str], set[str]] = {}
    for run in expand_runs(yaml.safe_load(config_path.read_text())):
        methods.setdefault((run.task, run.model), set()).add(run.method)
    return sum(2 * (len(names) - 1) for names in methods.values())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--quick", action="store_true", help="smoke mode: 100 draws, 1 repeat")
    args = parser.parse_args()
    require(GUE_TF0)
    from seqpeft.analysis.stats import KindScorer, StatsSettings, paired_bootstrap
    from seqpeft.tasks import task_kind

    settings = StatsSettings(confidence=0.95, bootstrap=100 if args.quick else 1000, seed=0, min_replicates=3,
                             full="full")
    repeats = 1 if args.quick else args.repeats
    rows, speedups = [], {}
    vectorised_seconds = {}
    for kind in ("sequence_classification", "regression"):
        entry = task_kind(kind)
        pairs = _frames(kind, np.random.default_rng(0))
        scorers = {"looped": entry.score_predictions, "vectorised": KindScorer(entry.score_predictions,
                                                                                 entry.score_resamples)}
        found = {}

        def contender(name):
            def run(_repeat: int) -> dict:
                found[name] = paired_bootstrap(pairs, scorers[name], settings)
                return {}
            return run

        results = alternate({name: contender(name) for name in scorers}, repeats)
        times = {name: median(r["seconds"] for r in results[name]) for name in scorers}
        same = all(abs(found["looped"][key] - found["vectorised"][key]) < 1e-9 for key in ("ci_low", "ci_high", "p_value"))
        speedups[kind] = times["looped"] / times["vectorised"]
        vectorised_seconds[kind] = times["vectorised"]
        rows.append([kind, times["looped"], times["vectorised"], speedups[kind], "yes" if same else "NO"])
    print_table(["kind (1 cell, 3 x 1,000 examples)", "looped s", "vectorised s", "speedup", "same interval"], rows)
    cells = _cells(REPO / "config" / "config.yaml")
    minutes = cells * vectorised_seconds["sequence_classification"] * (1000 / settings.bootstrap) / 60
    print(f"config/config.yaml: {cells} comparison cells; at the vectorised classification cell time "
          f"{minutes:.1f} min of bootstrap (the statistics rule asks for 30)")
    print(f"statistics_speedup: {speedups['sequence_classification']:.1f} "
          f"regression_speedup: {speedups['regression']:.1f} full_benchmark_minutes: {minutes:.1f}")


if __name__ == "__main__":
    main()
