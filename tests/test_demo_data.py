"""Synthetic data: deterministic bytes, balanced classes, a real signal, and valid SignalP records."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import pytest

from seqpeft.data.readers import check_label_sets, read_labeled_csv
from seqpeft.data.signalp import read_signalp_fasta, signalp_split
from seqpeft.tasks.demo_data import SIGNALP_PAIRS, generate_source, write_dna_task, write_signalp_fasta
from seqpeft.util.errors import SeqpeftInputError

MOTIF = "TATAAAAGGC"
SMALL = {"n_train": 200, "n_dev": 41, "n_test": 40}


def near(seq: str, motif: str, max_mismatch: int = 1) -> bool:
    k = len(motif)
    return any(sum(a != b for a, b in zip(seq[i:i + k], motif)) <= max_mismatch for i in range(len(seq) - k + 1))


def files(directory: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(directory.iterdir())}


def test_dna_task_is_byte_identical_for_a_seed(tmp_path):
    write_dna_task(tmp_path / "a", seed=7, **SMALL)
    write_dna_task(tmp_path / "b", seed=7, **SMALL)
    write_dna_task(tmp_path / "c", seed=8, **SMALL)
    assert files(tmp_path / "a") == files(tmp_path / "b")
    assert files(tmp_path / "a") != files(tmp_path / "c")
    assert sorted(files(tmp_path / "a")) == ["dev.csv", "test.csv", "train.csv"]  # no temp files left


def test_dna_task_balanced_with_motif_only_in_positives(tmp_path):
    write_dna_task(tmp_path, seed=1, length=60, **SMALL)
    splits = {name: read_labeled_csv(tmp_path / f"{name}.csv") for name in ("train", "dev", "test")}
    check_label_sets(splits["train"], {"dev": splits["dev"], "test": splits["test"]})
    for name, split in splits.items():
        n = len(split.sequences)
        assert int(split.labels.sum()) == n // 2, name
        assert all(len(s) == 60 for s in split.sequences)
        for seq, label in zip(split.sequences, split.labels):
            if label:
                assert MOTIF in seq
            else:
                assert not near(seq, MOTIF)
    assert splits["train"].labels[:20].tolist() != sorted(splits["train"].labels[:20].tolist())  # shuffled


def test_dna_task_options(tmp_path):
    write_dna_task(tmp_path, seed=2, n_train=100, n_dev=2, n_test=2, length=50, motif="GGGCCC", gc_shift=0.3,
                   motif_copies=3, mutation_rate=0.0)
    train = read_labeled_csv(tmp_path / "train.csv")
    positives = [s for s, y in zip(train.sequences, train.labels) if y]
    negatives = [s for s, y in zip(train.sequences, train.labels) if not y]
    assert all(s.count("GGGCCC") >= 3 for s in positives)
    background = "".join(negatives)
    gc = (background.count("G") + background.count("C")) / len(background)
    assert 0.74 < gc < 0.86 and not any(near(s, "GGGCCC") for s in negatives)


def test_dna_task_mutations_keep_motif_close(tmp_path):
    write_dna_task(tmp_path, seed=3, n_train=200, n_dev=2, n_test=2, mutation_rate=0.1)
    train = read_labeled_csv(tmp_path / "train.csv")
    positives = [s for s, y in zip(train.sequences, train.labels) if y]
    assert sum(MOTIF in s for s in positives) < len(positives)  # some copies really are mutated
    assert sum(near(s, MOTIF, 3) for s in positives) > 0.9 * len(positives)


def test_dna_task_rejects_impossible_arguments(tmp_path):
    with pytest.raises(SeqpeftInputError, match="do not fit"):
        write_dna_task(tmp_path, seed=0, length=15, motif_copies=2)
    with pytest.raises(SeqpeftInputError, match="gc_shift"):
        write_dna_task(tmp_path, seed=0, gc_shift=0.5)
    with pytest.raises(SeqpeftInputError, match="motif"):
        write_dna_task(tmp_path, seed=0, motif="TAXA")
    assert list(tmp_path.iterdir()) == []


# ---------------------------------------------------------------------------------------------


def test_signalp_fasta_parses_and_covers_every_pair_in_every_partition(tmp_path):
    path = tmp_path / "train_set.fasta"
    write_signalp_fasta(path, seed=5, n_per_partition=60)
    records = read_signalp_fasta(path)
    assert len(records) == 180
    for partition in (0, 1, 2):
        pairs = {(r.kingdom, r.sp_type) for r in records if r.partition == partition}
        assert pairs == set(SIGNALP_PAIRS)
    kingdoms_with_sp = {k for k, t in SIGNALP_PAIRS if t == "SP"} & {k for k, t in SIGNALP_PAIRS if t == "NO_SP"}
    assert kingdoms_with_sp == {"EUKARYA", "ARCHAEA", "NEGATIVE", "POSITIVE"}
    assert all(40 <= len(r.sequence) <= 70 for r in records)
    split = signalp_split(records, "t2v0")
    assert all(split[name] for name in ("train", "dev", "test"))


def test_signalp_records_look_like_biology(tmp_path):
    path = tmp_path / "sp.fasta"
    write_signalp_fasta(path, seed=11, n_per_partition=100)
    records = read_signalp_fasta(path)
    for r in records:
        assert r.sequence[0] == "M"
        signal = r.labels.rstrip("IOM")
        region = r.sequence[: len(signal)]
        if r.sp_type == "NO_SP":
            assert signal == "" and r.labels[0] == "I"
            assert set(r.labels) in ({"I"}, {"I", "M", "O"})
            continue
        code = {"SP": "S", "TAT": "T", "LIPO": "L"}[r.sp_type]
        assert signal == code * len(signal) and set(r.labels[len(signal):]) == {"O"}
        assert 15 <= len(signal) <= 30
        assert set(region[1:6]) & set("KR")  # positive n-region (TAT: the twin arginines)
        if r.sp_type in ("SP", "TAT"):
            assert region[-3] == "A" and region[-1] == "A"  # A-x-A cleavage site
        if r.sp_type == "TAT":
            assert "RR" in region and "FLK" in region
        if r.sp_type == "LIPO":
            assert region[-3] == "L" and region[-2] in "AS" and region[-1] in "GA"
            assert r.sequence[len(signal)] == "C"  # lipobox cysteine starts the mature protein
    counts = Counter(r.sp_type for r in records)
    assert counts["NO_SP"] > counts["LIPO"] and counts["SP"] > counts["TAT"]
    assert any("M" in r.labels for r in records)


def test_signalp_short_proteins(tmp_path):
    write_signalp_fasta(tmp_path / "s.fasta", seed=4, n_per_partition=100, min_len=25, max_len=30)
    records = read_signalp_fasta(tmp_path / "s.fasta")
    assert all(25 <= len(r.sequence) <= 30 for r in records)
    assert all(r.labels.endswith("OOOOO") for r in records if r.sp_type != "NO_SP")
    with pytest.raises(SeqpeftInputError, match="lengths"):
        write_signalp_fasta(tmp_path / "x.fasta", seed=0, min_len=20, max_len=30)


def test_signalp_fasta_is_deterministic(tmp_path):
    write_signalp_fasta(tmp_path / "a.fasta", seed=3, n_per_partition=20)
    write_signalp_fasta(tmp_path / "b.fasta", seed=3, n_per_partition=20)
    assert (tmp_path / "a.fasta").read_bytes() == (tmp_path / "b.fasta").read_bytes()


def test_signalp_rejects_too_few_records(tmp_path):
    with pytest.raises(SeqpeftInputError, match="n_per_partition"):
        write_signalp_fasta(tmp_path / "x.fasta", seed=0, n_per_partition=5)


# ---------------------------------------------------------------------------------------------


def test_generate_source_dna_and_signalp(tmp_path):
    generate_source({"synthetic": "dna", "seed": 1, "n_train": 20, "n_dev": 4, "n_test": 4}, tmp_path / "dna")
    assert sorted(p.name for p in (tmp_path / "dna").iterdir()) == ["dev.csv", "test.csv", "train.csv"]
    generate_source({"synthetic": "signalp", "seed": 1, "n_per_partition": 14}, tmp_path / "sp")
    assert len(read_signalp_fasta(tmp_path / "sp" / "train_set.fasta")) == 42
    assert sorted(p.name for p in tmp_path.iterdir()) == ["dna", "sp"]


def test_generate_source_errors_leave_nothing(tmp_path):
    with pytest.raises(SeqpeftInputError, match="unknown synthetic data kind 'rna'"):
        generate_source({"synthetic": "rna", "seed": 1}, tmp_path / "x")
    with pytest.raises(SeqpeftInputError, match="unknown key.*'lenght'"):
        generate_source({"synthetic": "dna", "seed": 1, "lenght": 50}, tmp_path / "x")
    with pytest.raises(SeqpeftInputError, match="no 'seed'"):
        generate_source({"synthetic": "signalp"}, tmp_path / "x")
    with pytest.raises(SeqpeftInputError, match="do not fit"):
        generate_source({"synthetic": "dna", "seed": 1, "length": 5}, tmp_path / "x")
    assert list(tmp_path.iterdir()) == []
