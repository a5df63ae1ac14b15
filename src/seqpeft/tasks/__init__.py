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
from seqpeft.tasks import regression  # noqa: F401,E402
from seqpeft.tokenize import TokenizedTask, cache_meta, save_cache

__all__ = ["FOLDS", "REPLICATES", "TASK_KINDS", "PartitionScheme", "TaskKind", "fold_indices", "objective_for",
           "task_kind", "task_splits", "tokenize_dsp_task", "tokenize_task"]


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
    alphabet = kind.alphabet_of(task_spec)
    meta = {**cache_meta(kind.name, tokenizer, tokenizer_dir, data_path), "alphabet": alphabet}
    meta.update(kind.tokenize(Path(data_path), tokenizer, arrays, None, alphabet))
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
    alphabet = kind.alphabet_of(task_spec)
    meta = {**cache_meta(kind.name, tokenizer, tokenizer_dir, data_path), "dsp": encoder.description(), "alphabet": alphabet}
    meta.update(kind.tokenize(Path(data_path), tokenizer, arrays, encode, alphabet))
    meta["dsp_truncated"] = truncated
    if any(truncated.values()):
        print(f"[seqpeft] DSP: sequences shortened to fit max_length={encoder.settings.max_length} with the whole "
              f"template: {truncated}")
    save_cache(Path(out_path), arrays, meta)
