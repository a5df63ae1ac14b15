"""Padding waste: the fraction of processed token positions that are padding.

seqpeft batches with ``seqpeft.core.batching.length_bucketed_batches`` and pads each batch only to its
own longest sequence (``collate``); the seed recipe pads every sequence of the data set to the
longest one (``padding="longest"`` over the whole split). Counted over one training epoch of the
real training sets, with the tokenizers the jobs use (Mistral-DNA BPE for GUE, the ESM vocabulary
for SignalP), at batch size 32. Pure counting, no timing: the numbers are exact and repeatable.

    python benchmarks/padding.py
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import numpy as np

from _common import CHECKPOINT, GUE_PROM_CORE_ALL, GUE_TF0, SIGNALP, print_table, require


def padding_fractions(lengths: np.ndarray, batch_size: int, bucket_size: int, max_length: int, seed: int = 0) -> tuple[float, float]:
    """(seqpeft, seed recipe) padding fractions of one epoch over sequences of these token lengths."""
    from seqpeft.core.batching import length_bucketed_batches

    lengths = np.minimum(lengths, max_length)
    real = int(lengths.sum())
    batches = length_bucketed_batches(lengths, batch_size, bucket_size, np.random.default_rng(seed))
    processed = sum(int(lengths[b].max()) * len(b) for b in batches)
    seed_processed = int(lengths.max()) * len(lengths)
    return 1 - real / processed, 1 - real / seed_processed


def task_lengths(name: str, work: Path) -> np.ndarray:
    """Token lengths of the training split of a task, through seqpeft's tokenized cache."""
    from seqpeft.data.tokenize import build_tokenizer, load_cache
    from seqpeft.tasks import tokenize_task
    from seqpeft.tasks import fold_indices

    if name == "signalp":
        tokenizer = work / "esm_tokenizer"
        build_tokenizer({"kind": "esm"}, tokenizer)
        tokenize_task({"kind": "signal_peptide"}, SIGNALP, tokenizer, work / "signalp.npz")
        cache = load_cache(work / "signalp.npz")
        train = fold_indices(cache.meta["records"]["partition"], "t0v1")["train"]
        return cache.splits["all"].lengths[train]
    folder = {"gue_tf_0": GUE_TF0, "gue_prom_core_all": GUE_PROM_CORE_ALL}[name]
    tokenize_task({"kind": "sequence_classification"}, folder, CHECKPOINT, work / f"{name}.npz")
    return load_cache(work / f"{name}.npz").splits["train"].lengths


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--bucket-size", type=int, default=64, help="seqpeft's training.bucket_size default")
    parser.add_argument("--max-length", type=int, default=512)
    parser.add_argument("--quick", action="store_true", help="smoke mode: GUE tf/0 only")
    args = parser.parse_args()
    tasks = ("gue_tf_0",) if args.quick else ("gue_tf_0", "gue_prom_core_all", "signalp")
    require(CHECKPOINT, GUE_TF0, *(() if args.quick else (GUE_PROM_CORE_ALL, SIGNALP)))
    rows = []
    with tempfile.TemporaryDirectory(prefix="seqpeft-padding-") as work:
        for name in tasks:
            lengths = task_lengths(name, Path(work))
            ours, seed = padding_fractions(lengths, args.batch_size, args.bucket_size, args.max_length)
            rows.append([name, len(lengths), float(lengths.mean()), int(lengths.max()), ours, seed])
    print_table(["task (train split)", "sequences", "mean tokens", "max tokens", "seqpeft padding", "seed recipe padding"],
                [[r[0], r[1], r[2], r[3], f"{r[4]:.4f}", f"{r[5]:.4f}"] for r in rows])
    worst = max(rows, key=lambda r: r[4])
    worst_seed = max(r[5] for r in rows)
    print(f"padding_fraction: {worst[4]:.3f} seed_recipe_padding_fraction: {worst_seed:.3f}")


if __name__ == "__main__":
    main()
