"""SignalP 6.0 three-line FASTA: ``>ACC|KINGDOM|TYPE|PARTITION``, sequence, per-residue labels
(LF or CRLF), read strictly (every error names the file, line and fix); and a fold's splits."""

from __future__ import annotations

from pathlib import Path

from seqpeft.data.readers import (KINGDOMS, PARTITIONS, PROTEIN_ALPHABET, RESIDUE_LABELS, SIGNALP_PARTITIONS, SP_TYPES,
                          _PARTITION_NAME_RE, SignalPRecord, _bad_letters, _check_letters, _describe_letters, _read_text,
                          _require_file)
from seqpeft.util.errors import SeqpeftInputError


def read_signalp_fasta(path: str | Path, alphabet: str = PROTEIN_ALPHABET) -> list[SignalPRecord]:
    """Read SignalP 6.0 three-line records (header, sequence, per-residue labels), LF or CRLF.

    Blank lines between records are allowed; anything else that breaks the three-line rhythm is an
    error, because a shifted line would pair a sequence with another protein's labels.
    """
    path = _require_file(path)
    lines = _split_lines(_read_text(path))
    if not any(line.strip() for line in lines):
        raise SeqpeftInputError(path, "file is empty.", fix="expected SignalP 6.0 records: '>ACC|KINGDOM|TYPE|PARTITION', "
                                "sequence line, label line.")
    records: list[SignalPRecord] = []
    first_line: dict[str, int] = {}
    index, n = 0, len(lines)
    while index < n:
        if not lines[index].strip():
            index += 1
            continue
        if index + 2 >= n:
            _truncated(path, lines, index)
        record = _signalp_record(path, lines, index, alphabet)
        if record.accession in first_line:
            raise SeqpeftInputError(
                path, f"duplicate accession {record.accession!r} (first record at line {first_line[record.accession]}).",
                fix="each protein may appear once; remove the duplicate record.",
                line=index + 1, record=record.accession)
        first_line[record.accession] = index + 1
        records.append(record)
        index += 3
    return records


def _split_lines(text: str) -> list[str]:
    lines = [line[:-1] if line.endswith("\r") else line for line in text.split("\n")]
    if lines and lines[-1] == "":
        lines.pop()
    return lines


def _truncated(path: Path, lines: list[str], index: int) -> None:
    header = lines[index].strip()
    accession = header[1:].split("|")[0].strip() if header.startswith(">") else None
    missing = "sequence and label lines" if index + 1 >= len(lines) else "label line"
    raise SeqpeftInputError(path, f"file ends in the middle of a record (missing its {missing}).",
                            fix="the file is truncated: re-download or regenerate it.",
                            line=index + 1, record=accession)


def _signalp_record(path: Path, lines: list[str], index: int, alphabet: str) -> SignalPRecord:
    accession, kingdom, sp_type, partition = _signalp_header(path, lines[index].strip(), index + 1)
    sequence = lines[index + 1].strip().upper()
    labels = lines[index + 2].strip()
    if not sequence or sequence.startswith(">"):
        raise SeqpeftInputError(path, "expected the sequence line after the header.",
                                fix="each record is three lines: header, sequence, labels.",
                                line=index + 2, record=accession)
    if not labels or labels.startswith(">"):
        raise SeqpeftInputError(path, "expected the label line after the sequence.",
                                fix="each record is three lines: header, sequence, labels.",
                                line=index + 3, record=accession)
    _check_letters(path, sequence, alphabet, index + 2, accession)
    if len(labels) != len(sequence):
        raise SeqpeftInputError(path, f"label line has {len(labels)} letters but the sequence has {len(sequence)}.",
                                fix="there must be one label per residue.", line=index + 3, record=accession)
    bad = _bad_letters(labels, RESIDUE_LABELS)
    if bad:
        raise SeqpeftInputError(path, f"label line contains letters outside {RESIDUE_LABELS}: {_describe_letters(bad)}.",
                                fix=f"per-residue labels must be one of {', '.join(RESIDUE_LABELS)} "
                                    "(or is a line missing or extra in this record?).",
                                line=index + 3, record=accession)
    return SignalPRecord(accession, kingdom, sp_type, partition, sequence, labels)


def _signalp_header(path: Path, header: str, line: int) -> tuple[str, str, str, int]:
    form = "'>ACCESSION|KINGDOM|TYPE|PARTITION'"
    if not header.startswith(">"):
        raise SeqpeftInputError(path, f"expected a header line starting with '>' but found {header[:40]!r}.",
                                fix=f"each record is three lines: {form}, sequence, labels.", line=line)
    fields = [f.strip() for f in header[1:].split("|")]
    accession = fields[0] or None
    if len(fields) != 4 or not all(fields):
        raise SeqpeftInputError(path, f"header {header!r} does not have the 4 fields of {form}.",
                                fix="fill in every field, separated by '|'.", line=line, record=accession)
    _, kingdom, sp_type, partition = fields
    if kingdom not in KINGDOMS:
        raise SeqpeftInputError(path, f"unknown kingdom {kingdom!r}.", fix=f"use one of {', '.join(KINGDOMS)}.",
                                line=line, record=accession)
    if sp_type not in SP_TYPES:
        raise SeqpeftInputError(path, f"unknown signal peptide type {sp_type!r}.",
                                fix=f"use one of {', '.join(SP_TYPES)}.", line=line, record=accession)
    if partition not in {str(p) for p in PARTITIONS}:
        raise SeqpeftInputError(path, f"unknown partition {partition!r}.",
                                fix=f"use one of {', '.join(str(p) for p in PARTITIONS)}.", line=line, record=accession)
    return fields[0], kingdom, sp_type, int(partition)


def signalp_split(records: list[SignalPRecord], partition_name: str) -> dict[str, list[SignalPRecord]]:
    """Split SignalP records by a ``t{T}v{V}`` name: test partition T, validation V, train the third.

    This is the PEFT-SP / SignalP 6.0 protocol: the three homology partitions rotate, so every
    protein is tested exactly once across t0/t1/t2.
    """
    match = _PARTITION_NAME_RE.fullmatch(str(partition_name))
    if not match or match.group(1) == match.group(2):
        raise SeqpeftInputError(None, f"SignalP partition name {partition_name!r} is not of the form t{{T}}v{{V}}.",
                                fix=f"use one of {', '.join(SIGNALP_PARTITIONS)} (test and validation partitions differ).")
    test, dev = int(match.group(1)), int(match.group(2))
    (train,) = set(PARTITIONS) - {test, dev}
    split: dict[str, list[SignalPRecord]] = {"train": [], "dev": [], "test": []}
    which = {train: "train", dev: "dev", test: "test"}
    for record in records:
        split[which[record.partition]].append(record)
    return split
