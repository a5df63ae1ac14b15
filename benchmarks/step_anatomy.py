"""Step anatomy: how much of the seed recipe's cost any training loop can remove on this model.

``throughput.py`` times whole runs. This script times bare training steps (forward, backward,
gradient clipping, AdamW step) of the same Hugging Face model on real GUE tf/0 batches, with no
loop around them, to separate what the recipe decides (batch width, optimizer kernel) from what
the model's kernels cost:

- ``seed_shape``: batches of 32 random training sequences padded to the data set's longest
  sequence (whole-dataset ``padding="longest"``), ``torch.optim.AdamW`` with the for-each kernel
  (the seeds' ``optim="adamw_torch"``);
- ``seqpeft_shape``: seqpeft's length-bucketed batches padded to their own longest sequence,
  fused AdamW (what ``seqpeft.training.loop`` uses);
- ``seqpeft_shape_compiled`` (``--compile``): the same with ``Module.compile(dynamic=True)``,
  compile time excluded (warm-up steps).

The ratio ``seed_shape / seqpeft_shape`` is the speed-up a loop gets from batch shapes and the
optimizer alone; the rest of ``throughput.py``'s figure comes from the Trainer's own per-step
work. Contenders alternate, medians of the repeats. It also times seqpeft's batch building
(``collate`` from the in-memory cache), the work DataLoader workers would take over.

    python benchmarks/step_anatomy.py            # ~2 min
    python benchmarks/step_anatomy.py --compile  # + the compiled step (~1 min of compiling)
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np

from _common import CHECKPOINT, GUE_TF0, alternate, median, print_table, require


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=60, help="timed steps per repeat")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--compile", action="store_true", help="also time the compiled seqpeft-shaped step")
    args = parser.parse_args()
    require(CHECKPOINT, GUE_TF0)

    import torch
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    from seqpeft.data.tokenize import load_cache
    from seqpeft.tasks import tokenize_task
    from seqpeft.core.batching import collate, length_bucketed_batches
    from seqpeft.tasks import task_splits

    torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory(prefix="seqpeft-anatomy-") as work:
        cache_path = Path(work) / "cache.npz"
        tokenize_task({"kind": "sequence_classification"}, GUE_TF0, CHECKPOINT, cache_path)
        train = task_splits(load_cache(cache_path), "0")["train"]
    rng = np.random.default_rng(0)
    longest = int(train.data.lengths.max())
    bucketed = length_bucketed_batches(train.data.lengths, 32, 64, rng)
    pad_id = AutoTokenizer.from_pretrained(str(CHECKPOINT)).pad_token_id

    def seed_batch(i):
        ids, mask, labels = collate(train, rng.choice(len(train.data), 32, replace=False), pad_id, 512, torch)
        padded = torch.full((32, longest), pad_id, dtype=ids.dtype)
        padded[:, :ids.shape[1]] = ids
        full_mask = torch.zeros_like(padded)
        full_mask[:, :mask.shape[1]] = mask
        return padded, full_mask, labels

    def seqpeft_batch(i):
        return collate(train, bucketed[i % len(bucketed)], pad_id, 512, torch)

    def contender(make_batch, fused: bool, compiled: bool):
        torch.manual_seed(0)
        model = AutoModelForSequenceClassification.from_pretrained(str(CHECKPOINT), num_labels=2)
        model.train()
        if compiled:
            model.compile(dynamic=True)
        optimizer = torch.optim.AdamW(model.parameters(), lr=5e-4, fused=fused, foreach=None if fused else True)
        params = [p for p in model.parameters() if p.requires_grad]
        batches = [make_batch(i) for i in range(args.steps + 10)]

        def step(batch):
            ids, mask, labels = batch
            loss = model(input_ids=ids, attention_mask=mask, labels=labels).loss
            loss.backward()
            torch.nn.utils.clip_grad_norm_(params, 1.0)
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)

        def run(repeat: int) -> dict:
            for batch in batches[:10]:  # warm-up (and the compile, when compiled)
                step(batch)
            tokens = sum(int(batch[0].numel()) for batch in batches[10:])
            started = time.perf_counter()
            for batch in batches[10:]:
                step(batch)
            seconds = time.perf_counter() - started
            return {"ms_per_step": 1000 * seconds / args.steps, "tokens_per_step": tokens / args.steps, "seconds": seconds}

        return run

    contenders = {"seed_shape": contender(seed_batch, fused=False, compiled=False),
                  "seqpeft_shape": contender(seqpeft_batch, fused=True, compiled=False)}
    if args.compile:
        contenders["seqpeft_shape_compiled"] = contender(seqpeft_batch, fused=True, compiled=True)
    print(f"GUE tf/0 training batches of 32, Mistral-DNA-1M full fine-tuning, {args.threads} thread(s), "
          f"{args.steps} steps x {args.repeats} alternating repeats; whole-dataset width {longest}")
    started = time.perf_counter()
    for indices in bucketed:
        collate(train, indices, pad_id, 512, torch)
    collate_us = 1e6 * (time.perf_counter() - started) / len(bucketed)
    print(f"collate (seqpeft's batch building from the cache, no DataLoader): {collate_us:.0f} microseconds per batch "
          f"of 32, over {len(bucketed)} batches")
    results = alternate(contenders, args.repeats)
    rows = [[name, median(r["ms_per_step"] for r in runs), median(r["tokens_per_step"] for r in runs) / 32]
            for name, runs in results.items()]
    print()
    print_table(["step", "ms per step (median)", "batch width (mean)"], rows)
    ratios = {name: rows[0][1] / ms for name, ms, _ in rows[1:]}
    print(" ".join(f"{name}_speedup: {ratio:.2f}" for name, ratio in ratios.items()))


if __name__ == "__main__":
    main()
