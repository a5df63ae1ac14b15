"""Batches of a tokenized task: a split of it (``Split``; the task kind cuts them, ``seqpeft.tasks``),
length-bucketed batch order, and padding of a batch (with per-residue labels aligned past the
leading special tokens)."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from seqpeft.data.tokenize import TokenizedSplit


@dataclass
class Split:
    """The tokenized sequences of one split and how to batch them."""

    data: TokenizedSplit
    per_residue: bool
    leading_specials: int = 1
    extra: dict = field(default_factory=dict)

    def subset(self, rows: np.ndarray) -> "Split":
        return Split(self.data.subset(rows), self.per_residue, self.leading_specials,
                     {key: values[rows] for key, values in self.extra.items()})


def length_bucketed_batches(lengths: np.ndarray, batch_size: int, bucket_size: int, rng: np.random.Generator) -> list[np.ndarray]:
    """Shuffle, cut into buckets of ``bucket_size`` batches, sort each bucket by length, shuffle batches.

    Sequences of similar length share a batch, so dynamic padding wastes little, while the order
    of batches stays random from epoch to epoch.
    """
    order = rng.permutation(len(lengths))
    chunk = batch_size * bucket_size
    batches = []
    for start in range(0, len(order), chunk):
        bucket = order[start:start + chunk]
        bucket = bucket[np.argsort(-lengths[bucket], kind="stable")]
        batches.extend(bucket[i:i + batch_size] for i in range(0, len(bucket), batch_size))
    return [batches[i] for i in rng.permutation(len(batches))]


def collate(split: Split, indices: np.ndarray, pad_id: int, max_length: int, torch_module):
    """Pad to the longest sequence of this batch; mask from lengths, never from token ids."""
    torch = torch_module
    data = split.data
    pieces = [data.sequence(i) for i in indices]
    pieces = [p if len(p) <= max_length else np.concatenate([p[:max_length - 1], p[-1:]]) for p in pieces]
    width = max(len(p) for p in pieces)
    input_ids = np.full((len(pieces), width), pad_id, dtype=np.int64)
    attention = np.zeros((len(pieces), width), dtype=np.int64)
    for row, piece in enumerate(pieces):
        input_ids[row, :len(piece)] = piece
        attention[row, :len(piece)] = 1
    if split.per_residue:
        labels = np.full((len(pieces), width), -100, dtype=np.int64)
        for row, index in enumerate(indices):
            residue_labels = data.residue_labels(index)
            room = len(pieces[row]) - split.leading_specials - 1
            residue_labels = residue_labels[:room]
            labels[row, split.leading_specials:split.leading_specials + len(residue_labels)] = residue_labels
    else:
        labels = data.labels[indices]
        labels = labels.astype(np.float32 if labels.dtype.kind == "f" else np.int64)  # real targets of regression
    return torch.from_numpy(input_ids), torch.from_numpy(attention), torch.from_numpy(labels)
