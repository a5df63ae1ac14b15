"""``seqpeft validate``: a file read as the task kind that will read it, before any job does."""

from __future__ import annotations

from pathlib import Path

from seqpeft.core.registry import task_kind, task_kinds
from seqpeft.util.errors import SeqpeftInputError

# A CSV whose header no kind claims is most likely a GUE-style file with a wrong header: check it
# as that kind, so the message names the columns it lacks.
FALLBACK_KIND = "sequence_classification"

# What `seqpeft validate` reports it checked a file as when no task kind claims it.
PLAIN_FASTA = "unlabelled FASTA (seqpeft predict input)"


def validate_task_file(path: str | Path, kind: str | None = None, alphabet: str | None = None) -> tuple[int, str]:
    """``seqpeft validate``: read ``path`` fully as the task kind that will read it, raising on the
    first problem (an error says which kind it checked); returns (records, what it was checked as).

    ``kind`` names the kind; without it the first kind (registry order) whose ``claims`` accepts
    the file's first non-blank line is used, else a FASTA (by its first line or name) is checked
    as prediction input and any other file as ``FALLBACK_KIND`` (so a CSV without its columns gets
    that kind's message). ``alphabet`` (dna/protein or letters) defaults to the kind's.
    """
    from dataclasses import replace

    from seqpeft.data.readers import FASTA_SUFFIXES, _require_file
    from seqpeft.data.sequences import first_line, validate_plain_fasta

    path = _require_file(path)
    if kind is not None:
        entry, why = task_kind(kind, where="--kind"), "--kind"
    else:
        line = first_line(path)
        entry = next((k for k in task_kinds().values() if line is not None and k.claims(line)), None)
        why = "inferred from its first line"
        if entry is None and ((line or "").startswith(">") or path.suffix.lower() in FASTA_SUFFIXES):
            entry, why = None, ""
        elif entry is None:
            entry, why = task_kind(FALLBACK_KIND), "no kind's header found; the default kind"
    if entry is not None and entry.validate_file is None:
        raise SeqpeftInputError(path, f"task kind {entry.name} declares no file check.",
                                fix="pass --kind with a kind that has one (seqpeft list kinds).")
    checked = f"{entry.name} ({why})" if entry is not None else PLAIN_FASTA
    try:
        if entry is None:
            return validate_plain_fasta(path, alphabet or "dna"), checked
        return entry.validate_file(path, alphabet or entry.alphabet), checked
    except SeqpeftInputError as error:
        raise replace(error, problem=f"checked as {checked}: {error.problem}") from None
