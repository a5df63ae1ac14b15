"""Tokenize-once cache: time to tokenize a task from its files vs to load it from the cache.

Tokenizing is what ``seqpeft.data.tokenize.tokenize_task`` does once per task x tokenizer (read and
validate the CSVs, batch-encode with the fast tokenizer, write the .npz); every fine-tuning job of
that task then only calls ``load_cache``. Both are timed end to end, alternating, medians of the
repeats; the load includes building the per-split arrays a job uses.

    python benchmarks/token_cache.py            # GUE tf/0 with the Mistral-DNA tokenizer
    python benchmarks/token_cache.py --quick
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

from _common import CHECKPOINT, GUE_TF0, alternate, median, print_table, require


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--quick", action="store_true", help="smoke mode: 1 repeat")
    args = parser.parse_args()
    if args.quick:
        args.repeats = 1
    require(CHECKPOINT, GUE_TF0)

    from seqpeft.data.tokenize import load_cache
    from seqpeft.tasks import tokenize_task

    with tempfile.TemporaryDirectory(prefix="seqpeft-cache-") as work:
        cache = Path(work) / "tf_0.npz"

        def tokenize(repeat: int) -> dict:
            started = time.perf_counter()
            tokenize_task({"kind": "sequence_classification"}, GUE_TF0, CHECKPOINT, cache)
            return {"seconds": time.perf_counter() - started}

        def load(repeat: int) -> dict:
            started = time.perf_counter()
            task = load_cache(cache)
            seconds = time.perf_counter() - started
            return {"seconds": seconds, "sequences": sum(len(s) for s in task.splits.values())}

        results = alternate({"tokenize": tokenize, "load_cache": load}, args.repeats)
        size_mb = cache.stat().st_size / 2**20
    tokenize_s = median(r["seconds"] for r in results["tokenize"])
    load_s = median(r["seconds"] for r in results["load_cache"])
    print()
    print(f"GUE tf/0 (train+dev+test, {results['load_cache'][0]['sequences']:,} sequences), cache {size_mb:.2f} MB")
    print_table(["step", "seconds (median)"], [["tokenize_task", f"{tokenize_s:.4f}"], ["load_cache", f"{load_s:.4f}"]])
    print(f"cache_speedup: {tokenize_s / load_s:.1f}")


if __name__ == "__main__":
    main()
