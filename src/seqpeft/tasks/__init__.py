"""Task kinds, one module each, found by name (like peft's tuners and seqpeft's methods).

``seqpeft.tasks.registry`` says what a kind declares; importing this package registers every
kind below. The functions here are what the rules' scripts and the training loop call: they look
the kind up and never branch on its name.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from seqpeft.errors import SeqpeftInputError
from seqpeft.tasks.registry import FOLDS, REPLICATES, TASK_KINDS, PartitionScheme, TaskKind, fold_indices, task_kind
# Importing a kind's module registers it; the order is the order of `seqpeft list kinds`.
from seqpeft.tasks import sequence_classification  # noqa: F401,E402
from seqpeft.tasks import multi_label  # noqa: F401,E402
from seqpeft.tasks.signal_peptide import kind as _signal_peptide  # noqa: F401,E402
from seqpeft.tokenize import TokenizedTask, cache_meta, save_cache

__all__ = ["FOLDS", "REPLICATES", "TASK_KINDS", "PartitionScheme", "TaskKind", "fold_indices", "objective_for",
           "task_kind", "task_splits", "tokenize_dsp_task", "tokenize_task", "validate_task_file"]


def objective_for(kind: str, task_spec: dict | None = None):
    """The training objective of a task of ``kind`` (its settings may pick a variant, e.g. region labels)."""
    return task_kind(kind).objective(task_spec)


def task_splits(cache: TokenizedTask, partition: str) -> dict:
    """train/dev/test ``Split``s of a cached task for one partition wildcard value."""
    return task_kind(cache.kind, where=cache.meta.get("data")).splits(cache, partition)


def tokenize_task(task_spec: dict, data_path: Path, tokenizer_dir: Path, out_path: Path) -> None:
    """Validate and tokenize one task's files with one tokenizer into ``out_path`` (.npz)."""
    from transformers import AutoTokenizer

    kind = task_kind(task_spec["kind"])
    tokenizer = AutoTokenizer.from_pretrained(str(tokenizer_dir))
    arrays: dict[str, np.ndarray] = {}
    meta = cache_meta(kind.name, tokenizer, tokenizer_dir, data_path)
    meta.update(kind.tokenize(Path(data_path), tokenizer, arrays))
    save_cache(Path(out_path), arrays, meta)


def tokenize_dsp_task(task_spec: dict, data_path: Path, tokenizer_dir: Path, dsp: dict, out_path: Path,
                      model: str = "") -> None:
    """Tokenize a task with a DSP template (``seqpeft.dsp``) into a cache.

    Same layout as ``tokenize_task`` (training reads it unchanged); ``meta["dsp"]`` records the
    settings and the ids used, ``meta["dsp_truncated"]`` how many sequences lost nucleotides.
    """
    from transformers import AutoTokenizer

    from seqpeft.dsp import DspEncoder, DspSettings

    kind = task_kind(task_spec["kind"])
    if not kind.text_template:
        raise SeqpeftInputError(None, f"domain-shift prompting does not apply to {kind.name} tasks.",
                                fix="drop the dsp method variants from this task's experiments.")
    tokenizer = AutoTokenizer.from_pretrained(str(tokenizer_dir))
    encoder = DspEncoder(tokenizer, DspSettings.from_dict(dsp), model)
    unknown = encoder.template_unknown_tokens()
    print(f"[seqpeft] DSP {encoder.settings.encoding}: template is {encoder.template_tokens} tokens"
          + (f", {unknown} of them unknown to the tokenizer (text its vocabulary cannot spell)" if unknown else ""))
    truncated: dict[str, int] = {}

    def encode(sequences: list[str], path: Path) -> tuple[np.ndarray, np.ndarray]:
        ids, offsets, cut = encoder.encode(sequences, source=path)
        truncated[Path(path).stem] = len(cut)
        return ids, offsets

    arrays: dict[str, np.ndarray] = {}
    meta = {**cache_meta(kind.name, tokenizer, tokenizer_dir, data_path), "dsp": encoder.description()}
    meta.update(kind.tokenize(Path(data_path), tokenizer, arrays, encode))
    meta["dsp_truncated"] = truncated
    if any(truncated.values()):
        print(f"[seqpeft] DSP: sequences shortened to fit max_length={encoder.settings.max_length} with the whole "
              f"template: {truncated}")
    save_cache(Path(out_path), arrays, meta)


# What `seqpeft validate` reports it checked a file as when no task kind claims it.
PLAIN_FASTA = "unlabelled FASTA (seqpeft predict input)"


def validate_task_file(path: str | Path, kind: str | None = None, alphabet: str | None = None) -> tuple[int, str]:
    """``seqpeft validate``: read ``path`` fully as the task kind that will read it, raising on the
    first problem (an error says which kind it checked); returns (records, what it was checked as).

    ``kind`` names the kind; without it the first kind (registry order) whose ``claims`` accepts
    the file's first non-blank line is used, else a FASTA (by its first line or name) is checked
    as prediction input and any other file as the first registered kind (so a CSV without its columns gets that kind's
    message). ``alphabet`` (dna/protein or letters) defaults to the kind's.
    """
    from dataclasses import replace

    from seqpeft.data import FASTA_SUFFIXES, _require_file
    from seqpeft.sequences import first_line, validate_plain_fasta

    path = _require_file(path)
    if kind is not None:
        entry, why = task_kind(kind, where="--kind"), "--kind"
    else:
        line = first_line(path)
        entry = next((k for k in TASK_KINDS.values() if line is not None and k.claims(line)), None)
        why = "inferred from its first line"
        if entry is None and ((line or "").startswith(">") or path.suffix.lower() in FASTA_SUFFIXES):
            entry, why = None, ""
        elif entry is None:
            entry, why = next(iter(TASK_KINDS.values())), "no kind's header found; the default kind"
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
