"""Sequence-level protein tasks derived from a SignalP 6.0 FASTA (rule derive_source).

SignalP 6.0's three homology partitions become the splits (by default 0 train, 1 dev, 2 test), so
no protein in dev or test has a close homologue in train:

* ``signalp_sp_type``: a ``sequence_classification`` CSV: the signal-peptide type of each protein
  from its sequence alone, label = index into NO_SP, SP, LIPO, TAT, TATLIPO, PILIN (6 classes,
  heavily imbalanced: read MCC and macro F1).
* ``signalp_sp_length``: a ``regression`` CSV over the proteins that have a signal peptide:
  target = its length, the cleavage site (index of the first mature residue).

``n_train`` / ``n_dev`` / ``n_test`` take a seeded slice of a split (the demo's): stratified by SP
type, keeping at least a few proteins of every type the split has.
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable

import numpy as np

from seqpeft.util.errors import SeqpeftInputError

SPLIT_NAMES = ("train", "dev", "test")
MIN_PER_TYPE = 4  # a slice keeps this many proteins of every SP type (or all it has)


def _slice(records: list, count: int | None, rng: np.random.Generator) -> list:
    """``count`` records (all when None), stratified by SP type, at least MIN_PER_TYPE per type."""
    if count is None or count >= len(records):
        return records
    types = sorted({record.sp_type for record in records})
    chosen: list[int] = []
    for sp_type in types:
        members = [index for index, record in enumerate(records) if record.sp_type == sp_type]
        quota = min(len(members), max(MIN_PER_TYPE, round(count * len(members) / len(records))))
        chosen.extend(rng.choice(members, quota, replace=False).tolist())
    return [records[index] for index in sorted(chosen)]


def _sp_type_row(record) -> str | None:
    from seqpeft.data.readers import SP_TYPES

    return f"{record.accession},{record.sequence},{SP_TYPES.index(record.sp_type)}"


def _sp_length_row(record) -> str | None:
    from seqpeft.tasks.signal_peptide.metrics import sp_length

    site = sp_length(record.labels)
    return None if site < 0 else f"{record.accession},{record.sequence},{site}"


# derivation name -> (CSV header, row of a record or None to leave it out)
DERIVATIONS: dict[str, tuple[str, Callable]] = {
    "signalp_sp_type": ("id,sequence,label", _sp_type_row),
    "signalp_sp_length": ("id,sequence,target", _sp_length_row),
}


def derive_signalp_task(fasta: Path, out_dir: Path, derive: str, *, seed: int = 0, train: int = 0, dev: int = 1,
                        test: int = 2, n_train: int | None = None, n_dev: int | None = None,
                        n_test: int | None = None) -> dict[str, int]:
    """Write train/dev/test.csv of derivation ``derive`` from the SignalP FASTA into ``out_dir``
    (which appears complete or not at all); returns the rows per split."""
    from seqpeft.util.atomic import atomic_directory
    from seqpeft.data.signalp import read_signalp_fasta

    if derive not in DERIVATIONS:
        raise SeqpeftInputError(None, f"unknown derivation {derive!r}.", fix=f"use one of {', '.join(DERIVATIONS)}.")
    partitions = {"train": train, "dev": dev, "test": test}
    if len(set(partitions.values())) != 3:
        raise SeqpeftInputError(None, f"derived source: the partitions of train/dev/test {partitions} must differ.",
                                fix="give train, dev and test one SignalP partition (0, 1, 2) each.")
    header, row_of = DERIVATIONS[derive]
    records = read_signalp_fasta(fasta)
    rng = np.random.default_rng(seed)
    counts = {"train": n_train, "dev": n_dev, "test": n_test}
    written: dict[str, int] = {}
    with atomic_directory(Path(out_dir)) as tmp:
        for name in SPLIT_NAMES:
            kept = [r for r in records if r.partition == partitions[name] and row_of(r)]
            if not kept:
                raise SeqpeftInputError(fasta, f"partition {partitions[name]} holds no protein for {derive} ({name}).",
                                        fix="check the partitions given to train/dev/test.")
            rows = [row_of(record) for record in _slice(kept, counts[name], rng)]
            (tmp / f"{name}.csv").write_text("\n".join([header, *rows]) + "\n")
            written[name] = len(rows)
    return written
