"""What a task kind is: one record of everything that differs between kinds.

A kind declares how its files are read and tokenized into the cache, how a partition value cuts
the cache into train/dev/test (replicate seeds or cross-validation folds), its objective (head
width, loss, evaluation and the score model selection uses), how ``seqpeft evaluate`` and
``seqpeft predict`` treat a file, and the results the workflow makes for it beyond the shared
summary, table and figures. The training loop, the rules and the command line ask the kind;
none of them names one. A new kind is one module (or folder) under ``seqpeft.tasks`` that calls
``register_task_kind``, plus its name in the schema's ``tasks.kind`` enum.

This module is the interface between the two: the loop, the config checks and the rules import
it, the kinds import it to register, and nothing here imports a kind. The kinds are found the way
plugins are: the first lookup imports the package ``KIND_PACKAGE`` (``seqpeft.tasks``), whose
``__init__`` imports each of its modules.
"""

from __future__ import annotations

import importlib
import re
from pathlib import Path
from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np

from seqpeft.core.batching import Split
from seqpeft.data.tokenize import TokenizedTask, cache_meta, load_tokenizer, save_cache
from seqpeft.util.errors import SeqpeftInputError

FOLD_PARTITIONS = (0, 1, 2)
_FOLD_RE = re.compile(r"^t([0-2])v([0-2])$")


@dataclass(frozen=True)
class PartitionScheme:
    """What a task's ``partitions`` values mean and how one of them cuts the cache into splits."""

    name: str
    meaning: str  # for error messages: what a valid value is
    problem: Callable[[Any], str | None]  # why a configured value is not one (None: it is)
    splits: Callable[[TokenizedTask, str, bool], dict[str, Split]]  # (cache, partition, per_residue)
    tunes_on_own_partition: bool  # a fold tunes on its own validation part; replicates share one dev split


def _replicate_problem(value: Any) -> str | None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        return f"{value!r} is not a replicate seed (an integer >= 0)."
    return None


def _replicate_splits(cache: TokenizedTask, partition: str, per_residue: bool) -> dict[str, Split]:
    return {name: Split(cache.splits[name], per_residue=per_residue) for name in ("train", "dev", "test")}


def _fold_problem(value: Any) -> str | None:
    match = _FOLD_RE.match(str(value))
    if not match or match.group(1) == match.group(2):
        return f"{value!r} is not a cross-validation fold t{{T}}v{{V}} with T != V in 0..2."
    return None


def fold_indices(partitions: np.ndarray, fold: str) -> dict[str, np.ndarray]:
    """Indices for a cross-validation fold ``t{T}v{V}``: test on T, select on V, train on the rest."""
    if _fold_problem(fold):
        raise SeqpeftInputError(None, f"partition {fold!r} is not a cross-validation fold of two different partitions "
                                "among 0, 1, 2.", fix="use t{T}v{V}, e.g. t0v1.")
    test, dev = int(fold[1]), int(fold[3])
    (train,) = [p for p in FOLD_PARTITIONS if p not in (test, dev)]
    return {name: np.flatnonzero(partitions == p) for name, p in (("train", train), ("dev", dev), ("test", test))}


def _fold_splits(cache: TokenizedTask, partition: str, per_residue: bool) -> dict[str, Split]:
    everything = cache.splits["all"]
    records = cache.meta["records"]
    leading = int(cache.meta.get("leading_specials", 1))
    return {name: Split(everything.subset(indices), per_residue=per_residue, leading_specials=leading,
                        extra={key: values[indices] for key, values in records.items()})
            for name, indices in fold_indices(records["partition"], partition).items()}


def csv_columns(first_line: str) -> list[str]:
    """The lower-cased column names of a CSV header line ([] for a FASTA header)."""
    import csv

    if first_line.startswith(">"):
        return []
    try:
        return [name.strip().lower() for name in next(csv.reader([first_line]), [])]
    except csv.Error:
        return []


REPLICATES = PartitionScheme("replicates", "replicate seeds: integers >= 0, each a training run on the same "
                             "train/dev/test files", _replicate_problem, _replicate_splits, tunes_on_own_partition=False)
def refuse_partition(path, partition) -> None:
    """``seqpeft evaluate --partition`` picks records of a file that holds every fold; a kind whose
    files are its splits has none to pick."""
    if partition is not None:
        raise SeqpeftInputError(path, "--partition selects records of a SignalP FASTA; this model classifies whole "
                                "sequences from a CSV.", fix="leave out --partition.")


FOLDS = PartitionScheme("folds", "cross-validation folds t{T}v{V} (test partition T, validation partition V, "
                        "train on the third)", _fold_problem, _fold_splits, tunes_on_own_partition=True)


@dataclass(frozen=True)
class TaskKind:
    """Everything that differs between task kinds (see the module docstring)."""

    name: str
    summary: str  # one line: what the task's files hold (``seqpeft list tasks``, errors)
    partitions: PartitionScheme
    # (data path, tokenizer, arrays to fill, encode or None, alphabet letters) -> cache meta; a
    # ``fitted`` entry of the meta (what was learnt from the training split, e.g. a target scale)
    # reaches the objective as task_spec["fitted"] and is saved with the run's artifacts
    tokenize: Callable[..., dict]
    objective: Callable[[dict | None], Any]  # task spec -> seqpeft.core.objectives.Objective
    evaluate_file: Callable[..., dict]  # (predictor, path, partition) -> metrics, for `seqpeft evaluate`
    predict_file: Callable[..., int]  # (predictor, input path, output csv) -> rows written, for `seqpeft predict`
    alphabet: str = "dna"  # letters of its tasks' sequences unless a task says family: or alphabet: (alphabet_of)
    per_residue: bool = False  # one label per residue (else one per sequence)
    text_template: bool = False  # inputs may be wrapped in a domain-shift prompt (seqpeft.methods.dsp)
    sharding_conflict: str | None = None  # why its parameters cannot be sharded (FSDP), if they cannot
    # results of the workflow for a task of this kind beyond summary, table and the per-task figures
    # (relative to the results directory, {task} filled in); a rule in workflow/rules makes them
    outputs: tuple[str, ...] = ()
    synthetic: dict[str, Callable] = field(default_factory=dict)  # demo data generators: name -> writer(out_dir, **kw)
    settings: Callable[[dict | None], dict] = lambda task_spec: {}  # the task's own settings, for metrics.json
    # `seqpeft validate`: read one of the kind's files fully, raising on its first problem, and
    # return its record count ((path, alphabet name or letters) -> int); None: the kind has no check.
    validate_file: Callable[[Any, str], int] | None = None
    # Whether a file whose first non-blank line (a CSV header, a FASTA header) is this one holds
    # the kind's data: how `seqpeft validate` picks the kind when --kind is not given.
    claims: Callable[[str], bool] = lambda first_line: False
    # the headline metric of its evaluations (summary's test_score, table, Pareto and over-time
    # figures) and the dev metrics history.csv records at every evaluation
    score: str = "mcc"
    history_metrics: tuple[str, ...] = ("mcc", "accuracy")

    # Per-example test predictions (a run's predictions_test.parquet), so that every number can be
    # recomputed and comparisons paired: (test split, the objective's predictions) -> named columns,
    # ``example_id`` first. Each kind writes its own columns (labels, probabilities, residues).
    prediction_columns: Callable[[Any, dict], dict] | None = None
    # The kind's score (its test_mcc in summary.csv) from a predictions frame or a mapping of its
    # columns to arrays (``frame[column]``; a bootstrap resample is such a mapping): what
    # seqpeft.analysis.stats resamples for intervals and paired comparisons.
    score_predictions: Callable[[Any], float] | None = None
    # Optional, for speed: the score of many resamples at once, (columns, picks) -> one score per
    # row of ``picks`` (example indices), equal to score_predictions of each resample. Without it
    # the statistics call score_predictions once per resample.
    score_resamples: Callable[[Any, Any], Any] | None = None

    def alphabet_of(self, task_spec: dict | None) -> str:
        """The letters a task's sequences may hold: its ``alphabet`` (a name or the letters), else
        its ``family``, else this kind's. Tokenization, evaluate and predict check against them."""
        from seqpeft.data.readers import resolve_alphabet

        spec = task_spec or {}
        try:
            return resolve_alphabet(str(spec.get("alphabet") or spec.get("family") or self.alphabet))
        except SeqpeftInputError as error:
            raise SeqpeftInputError("alphabet", error.problem, fix=error.fix) from None

    def splits(self, cache: TokenizedTask, partition: str) -> dict[str, Split]:
        return self.partitions.splits(cache, str(partition), self.per_residue)


KIND_PACKAGE = "seqpeft.tasks"
TASK_KINDS: dict[str, TaskKind] = {}


def register_task_kind(kind: TaskKind) -> TaskKind:
    if kind.name in TASK_KINDS:
        raise ValueError(f"task kind {kind.name!r} is registered twice")
    if kind.prediction_columns is None or kind.score_predictions is None:
        raise ValueError(f"task kind {kind.name!r} must declare prediction_columns and score_predictions "
                         "(every run writes predictions_test.parquet; the statistics resample its score)")
    TASK_KINDS[kind.name] = kind
    return kind


def task_kinds() -> dict[str, TaskKind]:
    """Every registered kind by name (importing ``KIND_PACKAGE`` registers the built-in ones)."""
    importlib.import_module(KIND_PACKAGE)
    return TASK_KINDS


def task_kind(name: str, where: Any = None) -> TaskKind:
    """The registered kind ``name``; an unknown one is an input error naming ``where`` it came from."""
    kinds = task_kinds()
    if name not in kinds:
        raise SeqpeftInputError(where, f"unknown task kind {name!r}.", fix=f"use one of {', '.join(kinds)}.")
    return kinds[name]


def objective_for(kind: str, task_spec: dict | None = None):
    """The training objective of a task of ``kind`` (its settings may pick a variant, e.g. region labels)."""
    return task_kind(kind).objective(task_spec)


def task_splits(cache: TokenizedTask, partition: str) -> dict:
    """train/dev/test ``Split``s of a cached task for one partition wildcard value."""
    return task_kind(cache.kind, where=cache.meta.get("data")).splits(cache, partition)


def tokenize_task(task_spec: dict, data_path: Path, tokenizer_dir: Path, out_path: Path) -> None:
    """Validate and tokenize one task's files with one tokenizer into ``out_path`` (.npz)."""
    kind = task_kind(task_spec["kind"])
    tokenizer = load_tokenizer(tokenizer_dir)
    arrays: dict[str, np.ndarray] = {}
    alphabet = kind.alphabet_of(task_spec)
    meta = {**cache_meta(kind.name, tokenizer, tokenizer_dir, data_path), "alphabet": alphabet}
    meta.update(kind.tokenize(Path(data_path), tokenizer, arrays, None, alphabet))
    save_cache(Path(out_path), arrays, meta)


def predictions_frame(kind: TaskKind, split, predictions: dict):
    """One row per test example in split order, with the kind's columns (``example_id`` first)."""
    import pandas as pd

    return pd.DataFrame(kind.prediction_columns(split, predictions))


def write_test_predictions(path: Path, kind: TaskKind, split, predictions: dict) -> None:
    """A run's ``predictions_test.parquet``, atomically (seqpeft.util.atomic)."""
    from seqpeft.util.atomic import atomic_file

    frame = predictions_frame(kind, split, predictions)
    with atomic_file(path) as tmp:
        frame.to_parquet(tmp, index=False, engine="pyarrow")
