"""Readers: real shared files parse; every malformed input names its file, line/record and problem."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pytest

from seqpeft.data.readers import (
    KINGDOMS,
    RESIDUE_LABELS,
    SIGNALP_PARTITIONS,
    SP_TYPES,
    LabeledSequences,
    check_label_sets,
    read_labeled_csv,
)
from seqpeft.data.sequences import read_fasta, read_sequences
from seqpeft.data.signalp import read_signalp_fasta, signalp_split
from helpers import BAD_CASES, BAD_INPUTS, shared_path
from seqpeft.util.errors import SeqpeftInputError



def write(tmp_path: Path, name: str, text: str, newline: str = "\n") -> Path:
    path = tmp_path / name
    path.write_bytes(text.replace("\n", newline).encode())
    return path


# ---------------------------------------------------------------------------------------------
# Real data


def test_real_gue_tf0_dev_parses():
    data = read_labeled_csv(shared_path("data/gue/tf/0/dev.csv"))
    assert len(data.sequences) == 1000
    assert data.labels.dtype == np.int64 and set(data.labels.tolist()) == {0, 1}
    assert all(len(s) == 101 for s in data.sequences)
    assert data.ids[0] == "row0" and len(set(data.ids)) == 1000
    assert data.line_of(0) == 2 and data.line_of(999) == 1001


def test_real_gue_label_sets_agree():
    train = read_labeled_csv(shared_path("data/gue/tf/0/train.csv"))
    dev = read_labeled_csv(shared_path("data/gue/tf/0/dev.csv"))
    assert len(train.sequences) == 32378
    check_label_sets(train, {"dev": dev})


def test_real_signalp_parses_fast():
    path = shared_path("data/signalp/train_set.fasta")
    start = time.perf_counter()
    records = read_signalp_fasta(path)
    elapsed = time.perf_counter() - start
    assert len(records) == 20290
    assert elapsed < 2.0
    assert set("".join(r.labels for r in records)) == set(RESIDUE_LABELS)
    assert {r.kingdom for r in records} == set(KINGDOMS)
    assert {r.sp_type for r in records} == set(SP_TYPES)
    assert all(len(r.sequence) == len(r.labels) for r in records)
    assert not any("\r" in r.sequence or "\r" in r.labels for r in records)
    first = records[0]
    assert (first.accession, first.kingdom, first.sp_type, first.partition) == ("Q8TF40", "EUKARYA", "NO_SP", 0)


def test_real_signalp_splits_cover_every_record_once():
    records = read_signalp_fasta(shared_path("data/signalp/train_set.fasta"))
    split = signalp_split(records, "t0v1")
    assert {r.partition for r in split["test"]} == {0}
    assert {r.partition for r in split["dev"]} == {1}
    assert {r.partition for r in split["train"]} == {2}
    assert sum(len(v) for v in split.values()) == len(records)


def test_read_sequences_dispatches_on_real_files():
    ids, seqs = read_sequences(shared_path("data/signalp/train_set.fasta"), "protein")
    assert len(ids) == 20290 and ids[0] == "Q8TF40" and not set("".join(seqs[:50])) <= set(RESIDUE_LABELS)
    ids, seqs = read_sequences(shared_path("data/gue/tf/0/dev.csv"), "dna")
    assert len(ids) == 1000 and len(seqs[0]) == 101




def _read_any(path: Path) -> None:
    """The reader of the kind that claims the file (what `seqpeft validate` runs)."""
    from seqpeft.preflight.validate import validate_task_file

    validate_task_file(path, alphabet="dna" if path.suffix == ".csv" else "protein")


def test_every_bad_input_file_has_an_expectation():
    on_disk = {p.name for p in BAD_INPUTS.iterdir() if p.is_file()}
    assert on_disk == set(BAD_CASES), "add new files in tests/data/bad_inputs/ to BAD_CASES"


@pytest.mark.parametrize("name", sorted(BAD_CASES))
def test_bad_input_is_reported_precisely(name):
    fragment, line, record = BAD_CASES[name]
    path = BAD_INPUTS / name
    with pytest.raises(SeqpeftInputError) as caught:
        _read_any(path)
    err = caught.value
    message = str(err)
    assert name in message
    assert fragment in message
    assert err.line == line
    if line is not None:
        assert f"line {line}:" in message or f"line {line}," in message
    if record is not None:
        assert err.record == record and repr(record) in message
    assert "Fix:" in message


# ---------------------------------------------------------------------------------------------
# CSV details


def test_missing_file_is_named(tmp_path):
    with pytest.raises(SeqpeftInputError, match="nowhere.csv.*file not found"):
        read_labeled_csv(tmp_path / "nowhere.csv")


def test_csv_lowercase_extra_columns_ids_and_crlf(tmp_path):
    path = write(tmp_path, "t.csv", "id,sequence,label,note\nx1,acgtn,1,hi\nx2,ACGT,0,\n", newline="\r\n")
    data = read_labeled_csv(path)
    assert data.sequences == ["ACGTN", "ACGT"]
    assert data.ids == ["x1", "x2"] and data.labels.tolist() == [1, 0]


def test_csv_without_labels_when_not_required(tmp_path):
    path = write(tmp_path, "p.csv", "sequence\nACGT\nGGCC\n")
    data = read_labeled_csv(path, require_labels=False)
    assert data.labels is None and data.ids == ["row0", "row1"]
    with pytest.raises(SeqpeftInputError, match="missing column"):
        read_labeled_csv(path)


def test_csv_trailing_blank_lines_are_fine(tmp_path):
    path = write(tmp_path, "t.csv", "sequence,label\nACGT,1\nACGA,0\n\n\n")
    assert len(read_labeled_csv(path).sequences) == 2


def test_csv_protein_alphabet(tmp_path):
    path = write(tmp_path, "prot.csv", "sequence,label\nMKVLAXU,1\nMKJ,0\n")
    with pytest.raises(SeqpeftInputError) as caught:
        read_labeled_csv(path, alphabet="protein")
    assert caught.value.line == 3 and "'J'" in str(caught.value)


def test_quoted_multiline_field_reports_starting_line(tmp_path):
    path = write(tmp_path, "q.csv", 'sequence,label\nACGT,1\n"AC\nGT",0\n')
    with pytest.raises(SeqpeftInputError) as caught:
        read_labeled_csv(path)
    assert caught.value.line == 3 and "'\\n'" in str(caught.value)


# ---------------------------------------------------------------------------------------------
# Label sets


def _table(path: Path, labels: list[int]) -> LabeledSequences:
    return LabeledSequences(path=path, sequences=["ACGT"] * len(labels), labels=np.array(labels, dtype=np.int64),
                            ids=[f"row{i}" for i in range(len(labels))])


def test_single_class_training_set_is_refused(tmp_path):
    train = read_labeled_csv(write(tmp_path, "train.csv", "sequence,label\nACGT,1\nACGA,1\n"))
    with pytest.raises(SeqpeftInputError, match=r"train\.csv.*single class \(every label is 1\)"):
        check_label_sets(train, {})


def test_unseen_dev_label_names_file_label_and_line(tmp_path):
    train = read_labeled_csv(write(tmp_path, "train.csv", "sequence,label\nACGT,0\nACGA,1\n"))
    dev = read_labeled_csv(write(tmp_path, "dev.csv", "sequence,label\nACGT,0\nACGA,1\nAAAA,2\nCCCC,2\n"))
    with pytest.raises(SeqpeftInputError) as caught:
        check_label_sets(train, {"dev": dev})
    message = str(caught.value)
    assert "dev.csv, line 4" in message and "label 2" in message and "dev split" in message


def test_label_line_falls_back_to_row_index(tmp_path):
    train = _table(tmp_path / "a.csv", [0, 1])
    test = _table(tmp_path / "b.csv", [0, 1, 5])
    with pytest.raises(SeqpeftInputError) as caught:
        check_label_sets(train, {"test": test})
    assert caught.value.line == 4


# ---------------------------------------------------------------------------------------------
# SignalP and FASTA details

SIGNALP_OK = ">P1|EUKARYA|NO_SP|0\nMKV\nIII\n>P2|NEGATIVE|LIPO|2\nmkvlc\nLLLLO\n\n>P3|ARCHAEA|TAT|1\nMRRA\nTTTO\n"


def test_signalp_crlf_and_lf_agree(tmp_path):
    lf = read_signalp_fasta(write(tmp_path, "lf.fasta", SIGNALP_OK))
    crlf = read_signalp_fasta(write(tmp_path, "crlf.fasta", SIGNALP_OK, newline="\r\n"))
    assert lf == crlf and len(lf) == 3
    assert lf[1].sequence == "MKVLC" and lf[1].partition == 2 and lf[1].labels == "LLLLO"


def test_signalp_crlf_error_line_numbers(tmp_path):
    text = SIGNALP_OK.replace("MRRA\nTTTO", "MRRA\nTTT")
    with pytest.raises(SeqpeftInputError) as caught:
        read_signalp_fasta(write(tmp_path, "bad.fasta", text, newline="\r\n"))
    assert caught.value.line == 10 and caught.value.record == "P3"


def test_signalp_split_rejects_bad_names():
    for name in ("t0v0", "t3v1", "t0", "v1t0", ""):
        with pytest.raises(SeqpeftInputError, match="t0v1"):
            signalp_split([], name)
    for name in SIGNALP_PARTITIONS:
        assert set(signalp_split([], name)) == {"train", "dev", "test"}


def test_read_fasta_multiline(tmp_path):
    path = write(tmp_path, "x.fa", ">a desc\nacgt\nNNAC\n\n>b\nGG\n")
    assert read_fasta(path, "dna") == (["a", "b"], ["ACGTNNAC", "GG"])


def test_read_fasta_reads_signalp_without_gluing_labels(tmp_path):
    ids, seqs = read_fasta(write(tmp_path, "s.fasta", SIGNALP_OK), "protein")
    assert ids == ["P1", "P2", "P3"] and seqs == ["MKV", "MKVLC", "MRRA"]


def test_read_sequences_csv_without_labels_and_fasta_extension_check(tmp_path):
    assert read_sequences(write(tmp_path, "in.csv", "sequence\nACGT\n"), "dna") == (["row0"], ["ACGT"])
    assert read_sequences(write(tmp_path, "in.txt", ">s1\nACGT\n"), "dna") == (["s1"], ["ACGT"])
    with pytest.raises(SeqpeftInputError, match="FASTA extension"):
        read_sequences(write(tmp_path, "in.fa", "sequence\nACGT\n"), "dna")
    with pytest.raises(SeqpeftInputError, match="empty"):
        read_sequences(write(tmp_path, "empty.csv", "\n\n"), "dna")


def test_unknown_alphabet():
    with pytest.raises(SeqpeftInputError, match="unknown alphabet"):
        read_fasta(BAD_INPUTS / "fasta_duplicate_id.fa", "rna")
