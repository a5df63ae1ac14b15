"""Unlabelled sequences for prediction (plain FASTA, or the sequence column of a CSV), and
``first_line``: the one rule (first non-blank line) by which prediction and ``seqpeft validate``
(``seqpeft.preflight.validate.validate_task_file``) tell a file's format."""

from __future__ import annotations

from pathlib import Path

from seqpeft.data.readers import (FASTA_SUFFIXES, KINGDOMS, SP_TYPES, _check_letters, _read_text, _require_file, read_labeled_csv,
                          resolve_alphabet)
from seqpeft.util.errors import SeqpeftInputError
from seqpeft.data.signalp import _split_lines, read_signalp_fasta


def looks_like_signalp(header: str) -> bool:
    fields = header.lstrip(">").strip().split("|")
    return len(fields) == 4 and fields[1].strip() in KINGDOMS and fields[2].strip() in SP_TYPES


def read_fasta(path: str | Path, alphabet: str) -> tuple[list[str], list[str]]:
    """Read plain FASTA (multi-line sequences allowed) into (ids, sequences).

    The id is the header's first word and must be unique. A SignalP three-line file is recognised
    by its header and read as such, because its label lines would otherwise be glued onto the
    sequences (label letters I/O/M/S/T/L/P are also amino acids).
    """
    path = _require_file(path)
    letters = resolve_alphabet(alphabet)
    lines = _split_lines(_read_text(path))
    first = first_line(path)
    if first is None:
        raise SeqpeftInputError(path, "file is empty.", fix="expected FASTA records ('>id' line, then sequence lines).")
    if first.startswith(">") and looks_like_signalp(first):
        filled = [line.strip() for line in lines if line.strip()]
        if len(filled) >= 3 and not filled[2].startswith(">"):  # three-line records: labels follow
            records = read_signalp_fasta(path)
            for record in records:
                _check_letters(path, record.sequence, letters, None, record.accession)
            return [r.accession for r in records], [r.sequence for r in records]
        # Two-line records with SignalP headers (PEFT-SP's prediction input): the id is the accession.
        ids, sequences = _parse_plain_fasta(path, lines, letters)
        return [i.split("|")[0] if looks_like_signalp(i) else i for i in ids], sequences
    return _parse_plain_fasta(path, lines, letters)


def _parse_plain_fasta(path: Path, lines: list[str], letters: str) -> tuple[list[str], list[str]]:
    ids: list[str] = []
    sequences: list[str] = []
    seen_on: dict[str, int] = {}
    chunks: list[str] = []
    header_line = 0

    def finish() -> None:
        if ids and not chunks:
            raise SeqpeftInputError(path, "record has no sequence.", fix="add sequence lines or delete the record.",
                                    line=header_line, record=ids[-1])
        if ids:
            sequences.append("".join(chunks))

    for number, raw in enumerate(lines, start=1):
        line = raw.strip()
        if line.startswith(">"):
            finish()
            chunks = []
            header_line = number
            ids.append(_fasta_id(path, line, number, seen_on))
        elif not line:
            continue  # blank lines carry no residues in FASTA
        elif not ids:
            raise SeqpeftInputError(path, "sequence line before the first '>' header.",
                                    fix="start every record with a '>id' line.", line=number)
        else:
            chunk = line.upper()
            _check_letters(path, chunk, letters, number, ids[-1])
            chunks.append(chunk)
    finish()
    return ids, sequences


def _fasta_id(path: Path, header: str, line: int, seen_on: dict[str, int]) -> str:
    words = header[1:].split()
    if not words:
        raise SeqpeftInputError(path, "header has no id.", fix="write '>id' with a non-empty id.", line=line)
    ident = words[0]
    if ident in seen_on:
        raise SeqpeftInputError(path, f"duplicate id {ident!r} (first used on line {seen_on[ident]}).",
                                fix="make FASTA ids (the first word of each header) unique.", line=line, record=ident)
    seen_on[ident] = line
    return ident


def read_sequences(path: str | Path, alphabet: str) -> tuple[list[str], list[str]]:
    """Read (ids, sequences) for prediction from CSV (``sequence`` column) or FASTA (plain or SignalP).

    The content decides (a first non-blank character '>' means FASTA) so a misnamed file still
    works; a FASTA extension on non-FASTA content is an error rather than a CSV guess.
    """
    path = _require_file(path)
    first = _first_nonblank_char(path)
    if first is None:
        raise SeqpeftInputError(path, "file is empty.", fix="give a CSV with a 'sequence' column or a FASTA file.")
    if first == ">":
        return read_fasta(path, alphabet)
    if path.suffix.lower() in FASTA_SUFFIXES:
        raise SeqpeftInputError(path, "has a FASTA extension but does not start with a '>' header.",
                                fix="start every record with a '>id' line, or rename a CSV file to .csv.", line=1)
    table = read_labeled_csv(path, alphabet, require_labels=False)
    return table.ids, table.sequences


def _first_nonblank_char(path: Path) -> str | None:
    line = first_line(path)
    return line[0] if line else None


def first_line(path: str | Path) -> str | None:
    """The first non-blank line of a text file (byte-order mark and surrounding blanks removed),
    or None for an empty one: what decides how prediction and validation read a file."""
    with Path(path).open(encoding="utf-8-sig", errors="replace") as handle:
        for line in handle:
            if line.strip():
                return line.strip()
    return None


def validate_plain_fasta(path: str | Path, alphabet: str) -> int:
    """Records of an unlabelled FASTA as ``seqpeft predict`` reads it (no task kind claims one)."""
    return len(read_fasta(path, alphabet)[0])
