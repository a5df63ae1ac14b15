"""Readers that turn task files into validated Python data.

Why so strict: a benchmark that silently drops or mangles rows reports numbers for a data set
nobody asked for. Every reader here either returns exactly what the file says (sequences
upper-cased, nothing skipped) or raises ``SeqpeftInputError`` naming the file, the 1-based line
(the CSV header is line 1) or record, what is wrong and how to fix it.

Formats:

* GUE-style CSV: header ``sequence,label`` (extra columns allowed, optional unique ``id``).
* SignalP 6.0 three-line FASTA: ``>ACC|KINGDOM|TYPE|PARTITION``, sequence, per-residue labels.
* Plain FASTA (multi-line sequences allowed), used for prediction.

This module holds the shared letter checks and the CSV reader; ``seqpeft.data.signalp`` reads
the SignalP format and ``seqpeft.data.sequences`` plain FASTA and the format dispatch.

numpy is the only non-stdlib import: the workflow imports this module at parse time.
"""

from __future__ import annotations

import csv
import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from seqpeft.util.errors import SeqpeftInputError

DNA_ALPHABET = "ACGTN"
PROTEIN_ALPHABET = "ACDEFGHIKLMNPQRSTVWY" + "XBZUO"
ALPHABETS = {"dna": DNA_ALPHABET, "protein": PROTEIN_ALPHABET}

KINGDOMS = ("EUKARYA", "ARCHAEA", "NEGATIVE", "POSITIVE")
SP_TYPES = ("NO_SP", "SP", "LIPO", "TAT", "TATLIPO", "PILIN")
RESIDUE_LABELS = "IOMSTLP"
PARTITIONS = (0, 1, 2)
SIGNALP_PARTITIONS = ["t0v1", "t0v2", "t1v0", "t1v2", "t2v0", "t2v1"]

FASTA_SUFFIXES = (".fa", ".fasta", ".faa", ".fna", ".fas")
_INT_RE = re.compile(r"[+-]?\d+")
_PARTITION_NAME_RE = re.compile(r"t([012])v([012])")
# How many offending letters / example values an error message lists before "...".
_SHOW = 10


@dataclass
class LabeledSequences:
    """Sequences of one split with their integer labels (None when the file has no labels).

    ``lines`` holds the 1-based line of each row so later checks (label sets) can point at it.
    """

    path: Path
    sequences: list[str]
    labels: np.ndarray | None
    ids: list[str]
    lines: list[int] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.sequences)

    def line_of(self, index: int) -> int:
        """1-based line of row ``index`` (header is line 1)."""
        return self.lines[index] if self.lines else index + 2


@dataclass(frozen=True)
class SignalPRecord:
    """One SignalP 6.0 protein: header fields, sequence and its per-residue label string."""

    accession: str
    kingdom: str
    sp_type: str
    partition: int
    sequence: str
    labels: str


# ---------------------------------------------------------------------------------------------
# Shared helpers


def resolve_alphabet(alphabet: str) -> str:
    """Map ``"dna"``/``"protein"`` to its letters; a caller may also pass the letters themselves."""
    if alphabet in ALPHABETS:
        return ALPHABETS[alphabet]
    if alphabet and alphabet.isalpha() and alphabet.isupper():
        return alphabet
    raise SeqpeftInputError(None, f"unknown alphabet {alphabet!r}.",
                            fix=f"use one of {sorted(ALPHABETS)}, or the allowed letters themselves in upper case.")


def alphabet_name(letters: str) -> str | None:
    """``"dna"`` or ``"protein"`` for those alphabets' letters, None for an alphabet of its own."""
    return next((name for name, value in ALPHABETS.items() if value == letters), None)


def _deleter(letters: str) -> dict[int, None]:
    """A str.translate table that deletes ``letters``: what survives is the bad letters (fast)."""
    return {ord(c): None for c in letters}


_DELETERS: dict[str, dict[int, None]] = {}


def _bad_letters(sequence: str, letters: str) -> str:
    """Sorted distinct characters of ``sequence`` outside ``letters`` ("" when it is clean)."""
    table = _DELETERS.get(letters)
    if table is None:
        table = _DELETERS[letters] = _deleter(letters)
    rest = sequence.translate(table)
    return "".join(sorted(set(rest))) if rest else ""


def _describe_letters(bad: str) -> str:
    shown = ", ".join(repr(c) for c in bad[:_SHOW])
    return shown + (", ..." if len(bad) > _SHOW else "")


def _alphabet_name(letters: str) -> str:
    for name, value in ALPHABETS.items():
        if value == letters:
            return f"the {name} alphabet {letters}"
    return f"the alphabet {letters}"


ALPHABET_FIX = ("set the task's alphabet in the config: family: dna | protein, or alphabet: <the letters>, e.g. "
                "alphabet: ACGTNRY (seqpeft validate --alphabet likewise)")


def _check_letters(path: Path, sequence: str, letters: str, line: int | None, record: str | None = None,
                   what: str = "sequence") -> None:
    bad = _bad_letters(sequence, letters)
    if bad:
        raise SeqpeftInputError(
            path, f"{what} contains letters outside {_alphabet_name(letters)}: {_describe_letters(bad)}.",
            fix=f"remove or replace those letters{_unknown_hint(letters)}, or, if they belong, {ALPHABET_FIX}.",
            line=line, record=record)


def _unknown_hint(letters: str) -> str:
    if letters == DNA_ALPHABET:
        return " (use N for an unknown base)"
    if letters == PROTEIN_ALPHABET:
        return " (use X for an unknown residue)"
    return ""


def _require_file(path: str | Path) -> Path:
    path = Path(path)
    if not path.exists():
        raise SeqpeftInputError(path, "file not found.",
                                fix="check the path in the config, or run the data-preparation step first.")
    if not path.is_file():
        raise SeqpeftInputError(path, "is not a regular file.", fix="point the config at the data file itself.")
    return path


def _read_text(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError:
        raise not_utf8(path) from None


_UTF16_BOMS = (b"\xff\xfe", b"\xfe\xff")


def not_utf8(path: Path) -> SeqpeftInputError:
    """The error for a file that is not UTF-8, naming the line and the bytes that are not (a
    Windows-1252 'é' is byte 0xe9), or saying it is UTF-16 (Excel's "Unicode text")."""
    data = path.read_bytes()
    if data.startswith(_UTF16_BOMS):
        return SeqpeftInputError(path, "is UTF-16 text (Excel's \"Unicode text\" format), not UTF-8.",
                                 fix="save it as \"CSV UTF-8\" (or convert it: iconv -f UTF-16 -t UTF-8).", line=1)
    for magic, kind, tool in ((b"\x1f\x8b", "gzip", "gunzip"), (b"PK\x03\x04", "zip", "unzip"),
                              (b"\xfd7zXZ", "xz", "unxz")):
        if data.startswith(magic):
            return SeqpeftInputError(path, f"is {kind}-compressed, not text.",
                                     fix=f"decompress it ({tool}) and point at the file inside.")
    try:
        data.decode("utf-8-sig")
    except UnicodeDecodeError as err:
        line = data.count(b"\n", 0, err.start) + 1
        bad = data[err.start:err.end].hex(" ")
        column = err.start - (data.rfind(b"\n", 0, err.start) + 1) + 1
        return SeqpeftInputError(path, f"is not UTF-8 text: byte(s) {bad} at column {column} ({err.reason}; "
                                 "Windows-1252 or Latin-1 text, or a compressed or binary file?).",
                                 fix="save the file as UTF-8 (e.g. iconv -f WINDOWS-1252 -t UTF-8), or remove "
                                     "the accented or special characters.", line=line)
    return SeqpeftInputError(path, "is not UTF-8 text.", fix="save the file as plain UTF-8 text.")


# ---------------------------------------------------------------------------------------------
# GUE-style CSV


def read_labeled_csv(path: str | Path, alphabet: str = "dna", require_labels: bool = True) -> LabeledSequences:
    """Read a ``sequence,label`` CSV (GUE format) and validate every row.

    Extra columns are allowed. An ``id`` column, if present, gives the ids (must be unique and
    non-empty); otherwise ids are ``row{i}`` with ``i`` the 0-based data row. Sequences are
    upper-cased. With ``require_labels=False`` the label column may be absent (labels is None),
    but if present it is validated like any other.
    """
    path = _require_file(path)
    letters = resolve_alphabet(alphabet)
    with path.open(newline="", encoding="utf-8-sig") as handle:
        # strict: an unmatched quote is an error instead of silently swallowing the rest of the file.
        reader = csv.reader(handle, strict=True)
        try:
            return _parse_csv(path, reader, letters, require_labels)
        except UnicodeDecodeError:
            raise not_utf8(path) from None
        except csv.Error as err:
            raise SeqpeftInputError(path, f"is not valid CSV ({err}).",
                                    fix="check the quoting: a '\"' that opens a field must close it on the same "
                                        "line (an unmatched quote at or before this line?).",
                                    line=max(reader.line_num, 1)) from None


def _parse_header(path: Path, header: list[str], require_labels: bool) -> dict[str, int]:
    names = [name.strip().lower() for name in header]
    seen: dict[str, int] = {}
    for index, name in enumerate(names):
        if name in seen and name in ("sequence", "label", "id"):
            raise SeqpeftInputError(path, f"column {name!r} appears twice in the header.",
                                    fix="keep one column of that name.", line=1)
        seen.setdefault(name, index)
    needed = ["sequence", "label"] if require_labels else ["sequence"]
    missing = [name for name in needed if name not in seen]
    if missing:
        found = ", ".join(repr(h) for h in header) or "none"
        raise SeqpeftInputError(
            path, f"missing column(s) {', '.join(repr(m) for m in missing)}; found columns: {found}.",
            fix="the first line must be a header naming the columns, e.g. 'sequence,label'.", line=1)
    return seen


def _parse_csv(path: Path, reader, letters: str, require_labels: bool) -> LabeledSequences:
    header = next(reader, None)
    if header is None:
        raise SeqpeftInputError(path, "file is empty.", fix="the file needs a 'sequence,label' header and data rows.")
    columns = _parse_header(path, header, require_labels)
    seq_col = columns["sequence"]
    label_col = columns.get("label")
    id_col = columns.get("id")
    width = len(header)

    sequences: list[str] = []
    labels: list[int] = []
    ids: list[str] = []
    lines: list[int] = []
    first_id_line: dict[str, int] = {}
    first_blank: int | None = None
    end_of_previous = reader.line_num
    for row in reader:
        # A quoted field may span lines: report the line where the record starts.
        line, end_of_previous = end_of_previous + 1, reader.line_num
        if not row or all(not cell.strip() for cell in row):
            # Blank lines at the very end are harmless; one between rows hides a lost record.
            first_blank = line if first_blank is None else first_blank
            continue
        if first_blank is not None:
            raise SeqpeftInputError(path, "blank line between data rows.", fix="delete the blank line.",
                                    line=first_blank)
        if len(row) != width:
            raise SeqpeftInputError(path, f"row has {len(row)} field(s) but the header has {width}.",
                                    fix="give every row one value per header column (quote values with commas).",
                                    line=line)
        sequences.append(_csv_sequence(path, row[seq_col], letters, line))
        if label_col is not None:
            labels.append(_csv_label(path, row[label_col], line))
        ids.append(_csv_id(path, row, id_col, len(ids), line, first_id_line))
        lines.append(line)
    if not sequences:
        raise SeqpeftInputError(path, "has a header but no data rows.", fix="add data rows below the header.")
    label_array = np.asarray(labels, dtype=np.int64) if label_col is not None else None
    return LabeledSequences(path=path, sequences=sequences, labels=label_array, ids=ids, lines=lines)


def _csv_sequence(path: Path, value: str, letters: str, line: int) -> str:
    sequence = value.strip().upper()
    if not sequence:
        raise SeqpeftInputError(path, "empty sequence.", fix="fill in the sequence or delete the row.", line=line)
    _check_letters(path, sequence, letters, line)
    return sequence


def _csv_label(path: Path, value: str, line: int) -> int:
    text = value.strip()
    if not text:
        raise SeqpeftInputError(path, "missing label.", fix="give every row an integer class label (0, 1, ...).",
                                line=line)
    if not _INT_RE.fullmatch(text):
        raise SeqpeftInputError(path, f"label {text!r} is not an integer.",
                                fix="class labels must be integers 0, 1, ... (not '1.0' or class names).", line=line)
    label = int(text)
    if label < 0:
        raise SeqpeftInputError(path, f"label {label} is negative.",
                                fix="class labels must be non-negative integers 0, 1, ...", line=line)
    return label


def _csv_id(path: Path, row: list[str], id_col: int | None, index: int, line: int,
            first_line: dict[str, int]) -> str:
    if id_col is None:
        return f"row{index}"
    value = row[id_col].strip()
    if not value:
        raise SeqpeftInputError(path, "empty id.", fix="give every row a unique id, or drop the 'id' column.",
                                line=line)
    if value in first_line:
        raise SeqpeftInputError(path, f"duplicate id {value!r} (first used on line {first_line[value]}).",
                                fix="make ids unique.", line=line, record=value)
    first_line[value] = line
    return value


def check_label_sets(train: LabeledSequences, others: dict[str, LabeledSequences]) -> None:
    """Refuse splits a classifier cannot learn or be scored on.

    A single-class training set trains a constant predictor; a dev/test label never seen in
    training means the split or the label coding is wrong (and the head would be too small).
    """
    if train.labels is None:
        raise SeqpeftInputError(train.path, "training data has no labels.", fix="add a 'label' column.")
    train_classes = set(np.unique(train.labels).tolist())
    if len(train_classes) < 2:
        only = next(iter(train_classes))
        raise SeqpeftInputError(train.path, f"training data has a single class (every label is {only}).",
                                fix="a classifier needs at least two classes in the training split.")
    for name, split in others.items():
        if split.labels is None:
            raise SeqpeftInputError(split.path, f"{name} split has no labels.", fix="add a 'label' column.")
        unseen = ~np.isin(split.labels, list(train_classes))
        if unseen.any():
            index = int(np.argmax(unseen))
            label = int(split.labels[index])
            raise SeqpeftInputError(
                split.path,
                f"label {label} in the {name} split never occurs in the training split {train.path} "
                f"(training classes: {sorted(train_classes)}).",
                fix="check the label coding, or re-split so every class appears in training.",
                line=split.line_of(index))


def read_named_column(path: str | Path, records: LabeledSequences, column: str, header_fix: str) -> list[tuple[str, int]]:
    """The stripped cells of ``column`` with their file lines, one per record of ``records`` (what
    ``read_labeled_csv(path, require_labels=False)`` read), for kinds whose labels are not one
    class: the column must appear exactly once in the header (``header_fix`` says what it is)."""
    with Path(path).open(newline="", encoding="utf-8-sig") as handle:
        rows = [row for row in csv.reader(handle, strict=True) if row and any(cell.strip() for cell in row)]
    header = [name.strip().lower() for name in rows[0]]
    if column not in header:
        found = ", ".join(repr(name) for name in rows[0])
        raise SeqpeftInputError(path, f"missing column {column!r}; found columns: {found}.", fix=header_fix, line=1)
    if header.count(column) > 1:
        raise SeqpeftInputError(path, f"column {column!r} appears {header.count(column)} times in the header.",
                                fix="keep one column of that name.", line=1)
    index = header.index(column)
    return [(row[index].strip(), line) for row, line in zip(rows[1:], records.lines)]
