"""Deterministic synthetic tasks with a signal a small model can learn in seconds.

Why: the workflow, CI and the demo need data sets that exist without a download, are identical on
every machine for a given seed, and have a known answer (a planted motif, a signal peptide), so a
run that learns nothing is visibly broken. ``random.Random`` is used rather than numpy because its
stream for a seed is stable across Python and numpy versions: same arguments, same bytes.
"""

from __future__ import annotations

import inspect
import random
from pathlib import Path

from seqpeft.util.atomic import atomic_directory, write_text_atomic
from seqpeft.util.errors import SeqpeftInputError

BASES = "ACGT"
# Rough UniProt amino-acid frequencies (percent), for mature protein regions.
_AA_FREQ = {
    "A": 8.3, "R": 5.5, "N": 4.1, "D": 5.5, "C": 1.4, "Q": 3.9, "E": 6.7, "G": 7.1, "H": 2.3, "I": 5.9,
    "K": 5.8, "L": 9.7, "M": 2.4, "F": 3.9, "P": 4.7, "S": 6.6, "T": 5.4, "W": 1.1, "Y": 2.9, "V": 6.9,
}
_AA_LETTERS = "".join(_AA_FREQ)
_AA_WEIGHTS = list(_AA_FREQ.values())
_HYDROPHOBIC = "LLLAAVIF"  # h-region / transmembrane: leucine-rich like real ones
_POSITIVE = "KR"
_POLAR = "STNQG"

# Kingdom x type pairs the synthetic SignalP set uses: eukaryotes have no Tat or lipoprotein
# signal peptides; archaea and both bacterial groups have all four.
SIGNALP_PAIRS: tuple[tuple[str, str], ...] = (
    ("EUKARYA", "NO_SP"), ("EUKARYA", "SP"),
    *((kingdom, sp_type) for kingdom in ("ARCHAEA", "NEGATIVE", "POSITIVE")
      for sp_type in ("NO_SP", "SP", "LIPO", "TAT")),
)
_TYPE_WEIGHTS = {"NO_SP": 4.0, "SP": 2.0, "LIPO": 1.0, "TAT": 1.0}
_SIGNAL_LABEL = {"SP": "S", "TAT": "T", "LIPO": "L"}
_MIN_MATURE = 5  # residues after the cleavage site, so every signal peptide has a mature protein
_MIN_PROTEIN = 25  # the shortest Tat signal peptide (20) plus a mature part


# ---------------------------------------------------------------------------------------------
# Atomic writes


# ---------------------------------------------------------------------------------------------
# DNA: motif detection


def write_dna_task(out_dir: str | Path, *, seed: int, n_train: int = 2000, n_dev: int = 400, n_test: int = 400,
                   length: int = 80, motif: str = "TATAAAAGGC", gc_shift: float = 0.0, motif_copies: int = 1,
                   mutation_rate: float = 0.0) -> None:
    """Write ``train.csv``, ``dev.csv``, ``test.csv`` (GUE format) for a planted-motif task.

    Label 1 sequences carry ``motif_copies`` non-overlapping copies of ``motif`` (each base mutated
    with probability ``mutation_rate``) at random positions; label 0 sequences contain no window
    within Hamming distance 1 of the motif. Background bases are iid with GC content
    ``0.5 + gc_shift``. Labels are balanced (n//2 positives) and shuffled.
    """
    motif = motif.upper()
    _check_dna_args(length, motif, gc_shift, motif_copies, mutation_rate, (n_train, n_dev, n_test))
    rng = random.Random(seed)
    weights = _base_weights(gc_shift)
    out_dir = Path(out_dir)
    for name, n in (("train", n_train), ("dev", n_dev), ("test", n_test)):
        rows = _dna_rows(rng, n, length, motif, weights, motif_copies, mutation_rate)
        text = "sequence,label\n" + "".join(f"{seq},{label}\n" for seq, label in rows)
        write_text_atomic(out_dir / f"{name}.csv", text)


def _check_dna_args(length: int, motif: str, gc_shift: float, copies: int, mutation_rate: float,
                    sizes: tuple[int, ...]) -> None:
    def bad(problem: str, fix: str) -> None:
        raise SeqpeftInputError(None, f"synthetic dna task: {problem}", fix=fix)

    if len(motif) < 4 or set(motif) - set(BASES):
        bad(f"motif {motif!r} must be at least 4 letters of A/C/G/T.", "choose a longer ACGT motif.")
    if copies < 1 or copies * len(motif) > length:
        bad(f"{copies} copies of a {len(motif)}-letter motif do not fit in length {length}.",
            "raise 'length' or lower 'motif_copies' (at least 1).")
    if not -0.5 < gc_shift < 0.5:
        bad(f"gc_shift {gc_shift} must lie strictly between -0.5 and 0.5.", "GC content is 0.5 + gc_shift.")
    if not 0.0 <= mutation_rate < 1.0:
        bad(f"mutation_rate {mutation_rate} must be in [0, 1).", "use e.g. 0.05.")
    if any(n < 2 for n in sizes):
        bad(f"split sizes {sizes} must each be at least 2 (one per class).", "raise n_train/n_dev/n_test.")


def _base_weights(gc_shift: float) -> list[float]:
    at, gc = (0.5 - gc_shift) / 2, (0.5 + gc_shift) / 2
    return [at, gc, gc, at]  # A C G T


def _dna_rows(rng: random.Random, n: int, length: int, motif: str, weights: list[float], copies: int,
              mutation_rate: float) -> list[tuple[str, int]]:
    labels = [1] * (n // 2) + [0] * (n - n // 2)
    rng.shuffle(labels)
    rows = []
    for label in labels:
        if label:
            seq = _positive(rng, length, motif, weights, copies, mutation_rate)
        else:
            seq = _negative(rng, length, motif, weights)
        rows.append((seq, label))
    return rows


def _background(rng: random.Random, length: int, weights: list[float]) -> list[str]:
    return rng.choices(BASES, weights=weights, k=length)


def _mutate(rng: random.Random, motif: str, rate: float) -> str:
    if rate <= 0:
        return motif
    out = []
    for base in motif:
        if rng.random() < rate:
            base = rng.choice([b for b in BASES if b != base])
        out.append(base)
    return "".join(out)


def _positive(rng: random.Random, length: int, motif: str, weights: list[float], copies: int,
              mutation_rate: float) -> str:
    seq = _background(rng, length, weights)
    k = len(motif)
    # Choose non-overlapping slots: place copies in the free length, then spread them out.
    free = length - copies * k
    offsets = sorted(rng.randint(0, free) for _ in range(copies))
    for i, offset in enumerate(offsets):
        start = offset + i * k
        seq[start:start + k] = _mutate(rng, motif, mutation_rate)
    return "".join(seq)


def _near_motif_windows(seq: list[str], motif: str) -> list[int]:
    """Start positions of windows within Hamming distance 1 of ``motif``."""
    k = len(motif)
    hits = []
    for start in range(len(seq) - k + 1):
        mismatches = 0
        for a, b in zip(seq[start:start + k], motif):
            if a != b:
                mismatches += 1
                if mismatches > 1:
                    break
        if mismatches <= 1:
            hits.append(start)
    return hits


def _negative(rng: random.Random, length: int, motif: str, weights: list[float]) -> str:
    seq = _background(rng, length, weights)
    for _ in range(10_000):
        hits = _near_motif_windows(seq, motif)
        if not hits:
            return "".join(seq)
        # Re-draw one base inside the first offending window; repeat until clean.
        position = hits[0] + rng.randrange(len(motif))
        seq[position] = rng.choices(BASES, weights=weights)[0]
    raise SeqpeftInputError(None, f"synthetic dna task: cannot build motif-free background for {motif!r}.",
                            fix="use a longer, less repetitive motif or a smaller gc_shift.")


# ---------------------------------------------------------------------------------------------
# Protein: SignalP 6.0-style signal peptides


def write_signalp_fasta(path: str | Path, *, seed: int, n_per_partition: int = 200, min_len: int = 40,
                        max_len: int = 70) -> None:
    """Write a synthetic SignalP 6.0 three-line FASTA with biologically shaped signal peptides.

    Every pair in ``SIGNALP_PAIRS`` appears in each partition 0/1/2 (the rest of the records are
    drawn with more NO_SP and SP, like the real set). Records are shuffled across partitions.
    """
    if n_per_partition < len(SIGNALP_PAIRS):
        raise SeqpeftInputError(None, f"synthetic signalp: n_per_partition {n_per_partition} is below the "
                                f"{len(SIGNALP_PAIRS)} kingdom x type pairs.", fix=f"use at least {len(SIGNALP_PAIRS)}.")
    if min_len < _MIN_PROTEIN or max_len < min_len:
        raise SeqpeftInputError(None, f"synthetic signalp: lengths {min_len}..{max_len} are invalid.",
                                fix=f"use {_MIN_PROTEIN} <= min_len <= max_len (room for a signal peptide).")
    rng = random.Random(seed)
    pair_weights = [_TYPE_WEIGHTS[t] for _, t in SIGNALP_PAIRS]
    records = []
    for partition in (0, 1, 2):
        pairs = list(SIGNALP_PAIRS)
        pairs += rng.choices(SIGNALP_PAIRS, weights=pair_weights, k=n_per_partition - len(pairs))
        for kingdom, sp_type in pairs:
            seq, labels = _protein(rng, sp_type, rng.randint(min_len, max_len))
            records.append((kingdom, sp_type, partition, seq, labels))
    rng.shuffle(records)
    lines = []
    for number, (kingdom, sp_type, partition, seq, labels) in enumerate(records):
        lines.append(f">SYN{number:06d}|{kingdom}|{sp_type}|{partition}\n{seq}\n{labels}\n")
    write_text_atomic(Path(path), "".join(lines))


def _aa(rng: random.Random, alphabet: str, k: int) -> str:
    return "".join(rng.choice(alphabet) for _ in range(k))


def _mature(rng: random.Random, k: int) -> str:
    return "".join(rng.choices(_AA_LETTERS, weights=_AA_WEIGHTS, k=k)) if k > 0 else ""


def _n_region(rng: random.Random) -> str:
    """Met plus a short stretch carrying positive charges (K/R), as in the Sec n-region."""
    body = [rng.choice(_POSITIVE) if rng.random() < 0.5 else rng.choice(_POLAR) for _ in range(rng.randint(2, 4))]
    body[rng.randrange(len(body))] = rng.choice(_POSITIVE)  # at least one positive charge
    return "M" + "".join(body)


def _signal_peptide(rng: random.Random, sp_type: str) -> str:
    """The signal peptide itself (excluding the first mature residue)."""
    if sp_type == "SP":  # Sec/SPI: n-region, hydrophobic h-region, c-region ending A-x-A
        return _n_region(rng) + _aa(rng, _HYDROPHOBIC, rng.randint(8, 12)) + _aa(rng, _POLAR, rng.randint(1, 3)) + \
            "A" + rng.choice("SLVGQ") + "A"
    if sp_type == "TAT":  # Tat/SPI: twin-arginine motif S/T-R-R-x-F-L-K, milder h-region, A-x-A
        motif = rng.choice("ST") + "RR" + rng.choice("NQGS") + "FLK"
        return "M" + _aa(rng, _POLAR, rng.randint(1, 3)) + motif + _aa(rng, "AVLGIA", rng.randint(7, 10)) + \
            _aa(rng, _POLAR, rng.randint(1, 3)) + "A" + rng.choice("SLVGQ") + "A"
    if sp_type == "LIPO":  # Sec/SPII: n-region, h-region, lipobox L-[AS]-[GA] before the Cys
        return _n_region(rng) + _aa(rng, _HYDROPHOBIC, rng.randint(10, 13)) + "L" + rng.choice("AS") + rng.choice("GA")
    raise AssertionError(sp_type)


def _protein(rng: random.Random, sp_type: str, length: int) -> tuple[str, str]:
    if sp_type == "NO_SP":
        return _no_sp_protein(rng, length)
    signal = _signal_peptide(rng, sp_type)
    while len(signal) + _MIN_MATURE > length:  # short proteins: redraw (terminates: min lengths fit)
        signal = _signal_peptide(rng, sp_type)
    first = "C" if sp_type == "LIPO" else ""  # the lipobox Cys is the first mature residue
    mature = first + _mature(rng, length - len(signal) - len(first))
    return signal + mature, _SIGNAL_LABEL[sp_type] * len(signal) + "O" * len(mature)


def _no_sp_protein(rng: random.Random, length: int) -> tuple[str, str]:
    """Cytoplasmic (all I) or, for a quarter, a membrane protein with one TM helix (I, M, then O)."""
    if rng.random() >= 0.25:
        seq = "M" + _mature(rng, length - 1)
        return seq, "I" * length
    tm = min(rng.randint(17, 21), length - 10)
    inside = rng.randint(5, length - tm - 5)
    outside = length - inside - tm
    seq = "M" + _mature(rng, inside - 1) + _aa(rng, _HYDROPHOBIC, tm) + _mature(rng, outside)
    return seq, "I" * inside + "M" * tm + "O" * outside


# ---------------------------------------------------------------------------------------------
# Workflow entry point


def synthetic_writers() -> dict:
    """Generators by ``synthetic:`` name: this module's, and those task kinds bring (``TaskKind.synthetic``)."""
    from seqpeft.core.registry import task_kinds

    writers = {"dna": write_dna_task, "signalp": write_signalp_fasta}
    for kind in task_kinds().values():
        writers.update(kind.synthetic)
    return writers


def generate_source(spec: dict, out_dir: str | Path) -> None:
    """Build a ``synthetic:`` data source into ``out_dir``, which appears complete or not at all.

    ``{"synthetic": "dna", "seed": ..., **write_dna_task kwargs}`` writes train/dev/test CSVs;
    ``{"synthetic": "signalp", "seed": ..., **kwargs}`` writes ``train_set.fasta``; a task kind's
    own generator writes what its reader reads.
    """
    out_dir = Path(out_dir)
    kind = spec.get("synthetic")
    writers = synthetic_writers()
    if kind not in writers:
        raise SeqpeftInputError(None, f"unknown synthetic data kind {kind!r}.",
                                fix=f"set 'synthetic' to one of {', '.join(sorted(writers))}.")
    kwargs = {k: v for k, v in spec.items() if k != "synthetic"}
    _check_kwargs(kind, writers[kind], kwargs)
    with atomic_directory(out_dir) as tmp:
        if kind == "signalp":
            write_signalp_fasta(tmp / "train_set.fasta", **kwargs)
        else:
            writers[kind](tmp, **kwargs)


def _check_kwargs(kind: str, writer, kwargs: dict) -> None:
    """Name unknown or missing keys of a synthetic source instead of failing with a TypeError."""
    params = inspect.signature(writer).parameters
    allowed = [name for name, p in params.items() if p.kind is inspect.Parameter.KEYWORD_ONLY]
    unknown = sorted(set(kwargs) - set(allowed))
    if unknown:
        raise SeqpeftInputError(None, f"synthetic {kind} source has unknown key(s) {', '.join(map(repr, unknown))}.",
                                fix=f"allowed keys: synthetic, {', '.join(allowed)}.")
    if "seed" not in kwargs:
        raise SeqpeftInputError(None, f"synthetic {kind} source has no 'seed'.", fix="add 'seed: <int>' to the source.")
