"""Task kind ``multi_label_classification``: several yes/no labels per sequence (e.g. chromatin
marks in several cell types, LINGO's multiple-label tasks).

Files: ``train.csv``, ``dev.csv``, ``test.csv`` in the task's directory with the header
``sequence,labels``; ``labels`` holds one 0/1 flag per label, ``;``-separated, the same number in
every row of every split (``1;0;1``: the sequence has labels 0 and 2). Labels are named
``label0``, ``label1``, ... by position. Extra columns and an ``id`` column are allowed, as in the
single-label CSV. Every label must occur and be absent at least once in the training split.

One sigmoid output per label, binary cross-entropy under every method; metrics per label (MCC at
probability 1/2, AUROC, AUPRC) and their macro means; the mean dev MCC selects the checkpoint.
Partitions are replicate seeds.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from seqpeft.data.readers import read_labeled_csv, read_named_column
from seqpeft.util.errors import SeqpeftInputError
from seqpeft.core.objectives import Objective
from seqpeft.training.predict import predict_sequences, write_sequence_predictions
from seqpeft.core.registry import REPLICATES, TaskKind, csv_columns, refuse_partition, register_task_kind
from seqpeft.data.tokenize import tokenize_csv_splits

KIND = "multi_label_classification"
# The demo's three labels: motifs of different composition (a tiny model reads them apart in 10 epochs).
DEMO_MOTIFS = ("TATAAAAGGC", "GCGGCCGCGC", "CACCTGACCA")
COLUMN = "labels"


def label_names(count: int) -> list[str]:
    return [f"label{index}" for index in range(count)]


# ---- reading ----


def _flags(path: Path, text: str, line: int) -> list[int]:
    cells = [cell.strip() for cell in text.split(";")]
    if any(cell not in ("0", "1") for cell in cells):
        raise SeqpeftInputError(path, f"labels {text!r} are not ';'-separated 0/1 flags.",
                                fix="write one 0 or 1 per label, separated by ';' (e.g. 1;0;1).", line=line)
    return [int(cell) for cell in cells]


def _check_widths(path: Path, flags: list[list[int]], lines: list[int], expected: int | None, expected_from: str) -> None:
    """Every row holds ``expected`` flags (the model's or the training file's); without one, the
    count most rows hold, so that an odd first row is the one blamed."""
    from collections import Counter

    widths = Counter(len(row) for row in flags)
    if expected is not None:
        reference = f"the {expected_from} has {expected} labels"
    else:
        expected, rows = widths.most_common(1)[0]
        reference = f"{rows} of the {len(flags)} rows hold {expected}"
    for row, line in zip(flags, lines):
        if len(row) != expected:
            raise SeqpeftInputError(path, f"labels {';'.join(map(str, row))!r} hold {len(row)} flag(s); {reference}.",
                                    fix="give every row one flag per label, in the same order.", line=line)


def read_multilabel_csv(path: str | Path, alphabet: str = "dna", expected: int | None = None,
                        expected_from: str = "training file"):
    """The CSV's sequences (checked like a single-label CSV) and an (n, labels) 0/1 matrix."""
    records = read_labeled_csv(path, alphabet=alphabet, require_labels=False)
    cells = read_named_column(path, records, COLUMN, "the header of a multi_label_classification file is "
                              "'sequence,labels' (labels: ';'-separated 0/1 flags).")
    matrix = []
    for cell, line in cells:
        if not cell:
            raise SeqpeftInputError(path, "missing labels.", fix="give every row its ';'-separated 0/1 flags.", line=line)
        matrix.append(_flags(records.path, cell, line))
    _check_widths(records.path, matrix, records.lines, expected, expected_from)
    records.labels = np.asarray(matrix, dtype=np.int8)
    return records


def _check_splits(splits: dict) -> None:
    train = splits["train"]
    for index, name in enumerate(label_names(train.labels.shape[1])):
        present = int(train.labels[:, index].sum())
        if present in (0, len(train)):
            raise SeqpeftInputError(train.path, f"{name} (flag {index + 1} of each row) is {int(present > 0)} in every "
                                    "training row, so nothing can be learnt about it.",
                                    fix="drop that flag from every file, or add training rows with and without it.")


def _tokenize(data_dir, tokenizer, arrays: dict, encode=None, alphabet: str = "dna") -> dict:
    train = read_multilabel_csv(Path(data_dir) / "train.csv", alphabet)
    count = train.labels.shape[1]
    splits = {"train": train, **{name: read_multilabel_csv(Path(data_dir) / f"{name}.csv", alphabet, expected=count)
                                 for name in ("dev", "test")}}
    _check_splits(splits)
    return {**tokenize_csv_splits(tokenizer, splits, arrays, encode), "label_names": label_names(count)}


# ---- objective ----


def _bce_rows(logits, labels):
    import torch

    loss = torch.nn.functional.binary_cross_entropy_with_logits(logits, labels.float(), reduction="none")
    return loss.sum(dim=1), torch.full((len(labels),), labels.shape[1], dtype=torch.long)


def _loss(model, logits, labels, attention, split, indices):
    import torch

    return torch.nn.functional.binary_cross_entropy_with_logits(logits.float(), labels.float(), reduction="sum")


def _predict(model, split, pad_id, max_length, batch_size, device) -> dict:
    return predict_sequences(model, split, pad_id, max_length, batch_size, device, row_loss=_bce_rows)


def _auc(metric, truth: np.ndarray, scores: np.ndarray) -> float:
    return float(metric(truth, scores)) if 0 < truth.sum() < len(truth) else math.nan


def score(split, predictions: dict) -> dict:
    """Macro means over labels (``mcc`` selects the checkpoint) and every label's MCC, AUROC and AUPRC."""
    from sklearn.metrics import (accuracy_score, average_precision_score, f1_score, matthews_corrcoef,
                                 precision_score, recall_score, roc_auc_score)

    truth = np.asarray(predictions["labels"], dtype=np.int64)
    logits = np.asarray(predictions["logits"], dtype=np.float64)
    predicted = (logits > 0).astype(np.int64)
    per_label: dict[str, float] = {}
    for index, name in enumerate(label_names(truth.shape[1])):
        per_label[f"mcc_{name}"] = float(matthews_corrcoef(truth[:, index], predicted[:, index]))
        per_label[f"auroc_{name}"] = _auc(roc_auc_score, truth[:, index], logits[:, index])
        per_label[f"auprc_{name}"] = _auc(average_precision_score, truth[:, index], logits[:, index])

    def mean(prefix: str) -> float:
        values = [value for key, value in per_label.items() if key.startswith(prefix) and not math.isnan(value)]
        return float(np.mean(values)) if values else math.nan

    return {
        "mcc": mean("mcc_"), "auroc": mean("auroc_"), "auprc": mean("auprc_"),
        "accuracy": float(np.mean(truth == predicted)),  # per label, averaged
        "subset_accuracy": float(accuracy_score(truth, predicted)),  # every label right
        "f1": float(f1_score(truth, predicted, average="macro", zero_division=0)),
        "precision": float(precision_score(truth, predicted, average="macro", zero_division=0)),
        "recall": float(recall_score(truth, predicted, average="macro", zero_division=0)),
        "loss": float(predictions["loss"].sum()) / max(int(predictions["count"].sum()), 1),
        **per_label,
    }


OBJECTIVE = Objective(
    KIND, num_outputs=lambda n: n, attach=lambda model: None, loss=_loss,
    normaliser=lambda prepared, indices: sum(int(labels.numel()) for _, _, labels in prepared),
    predict=_predict, score=score)


def _prediction_columns(split, predictions: dict) -> dict:
    """``example_id`` (0-based row of test.csv), then per label ``label_<name>`` (0/1),
    ``predicted_<name>`` (probability > 1/2) and ``prob_<name>``."""
    truth = np.asarray(predictions["labels"], dtype=np.int64)
    probabilities = 1.0 / (1.0 + np.exp(-np.asarray(predictions["logits"], dtype=np.float64)))
    columns: dict = {"example_id": np.arange(len(truth))}
    for index, name in enumerate(label_names(truth.shape[1])):
        columns[f"label_{name}"] = truth[:, index]
        columns[f"predicted_{name}"] = (probabilities[:, index] > 0.5).astype(np.int64)
        columns[f"prob_{name}"] = probabilities[:, index]
    return columns


def _score_predictions(frame) -> float:
    """The mean over labels of each label's MCC (labels with an undefined MCC left out), as ``score``."""
    from seqpeft.training.metrics import fast_mcc

    names = [column[len("label_"):] for column in frame if column.startswith("label_")]
    values = [fast_mcc(np.asarray(frame[f"label_{name}"]), np.asarray(frame[f"predicted_{name}"])) for name in names]
    values = [value for value in values if not math.isnan(value)]
    return float(np.mean(values)) if values else math.nan


def _score_resamples(columns, picks: np.ndarray) -> np.ndarray:
    from seqpeft.training.metrics import mean_of_defined, resampled_mcc

    names = [column[len("label_"):] for column in columns if column.startswith("label_")]
    return mean_of_defined([resampled_mcc(np.asarray(columns[f"label_{name}"]), np.asarray(columns[f"predicted_{name}"]),
                                          picks) for name in names], len(picks))


# ---- the command line ----


def _evaluate_file(predictor, data_path: Path, partition=None) -> dict:
    refuse_partition(data_path, partition)
    records = read_multilabel_csv(data_path, predictor.alphabet, expected=predictor.num_labels, expected_from="model")
    return predictor.evaluate(predictor.split_for(records.sequences, records.labels, source=data_path))


def _predict_file(predictor, input_path: Path, output_path: Path) -> int:
    """One row per record: id, the predicted flags (``1;0;1``) and one probability per label."""
    return write_sequence_predictions(
        predictor, input_path, output_path, lambda n: np.zeros((n, predictor.num_labels)),
        lambda logits: 1.0 / (1.0 + np.exp(-logits.astype(np.float64))),
        lambda row, names: ";".join("1" if p > 0.5 else "0" for p in row), label_names)


# ---- demo data ----


def write_multilabel_dna_task(out_dir: str | Path, *, seed: int, n_train: int = 1000, n_dev: int = 200,
                              n_test: int = 300, length: int = 80, motifs: tuple[str, ...] = DEMO_MOTIFS,
                              motif_copies: int = 2, positive_rate: float = 0.4) -> None:
    """train/dev/test CSVs where label k is 1 exactly when the sequence holds ``motifs[k]``
    (``motif_copies`` planted copies at random places); each label is drawn on its own, and a
    sequence without label k never holds motif k by chance (it is redrawn)."""
    rng = np.random.default_rng(seed)
    bases = np.array(list("ACGT"))
    motifs = [str(motif).upper() for motif in motifs]
    motif_length = max(len(motif) for motif in motifs)
    if len(set(motifs)) < len(motifs) or any(set(motif) - set("ACGT") for motif in motifs):
        raise SeqpeftInputError(None, f"synthetic multi-label task: motifs {motifs} are not distinct words of A, C, G, T.",
                                fix="give one distinct motif per label.")
    if len(motifs) * motif_copies * motif_length > length:
        raise SeqpeftInputError(None, f"synthetic multi-label task: {len(motifs)} x {motif_copies} motifs of up to "
                                f"{motif_length} bases do not fit {length}-base sequences.",
                                fix="raise length or lower motif_copies, or use fewer or shorter motifs.")
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    for name, count in (("train", n_train), ("dev", n_dev), ("test", n_test)):
        rows = ["sequence,labels"]
        for _ in range(count):
            flags = rng.random(len(motifs)) < positive_rate
            while True:
                sequence = list(rng.choice(bases, length))
                slots = iter(rng.permutation(length // motif_length) * motif_length)
                for motif, flag in zip(motifs, flags):
                    for _ in range(motif_copies if flag else 0):
                        slot = next(slots)
                        sequence[slot:slot + len(motif)] = motif
                text = "".join(sequence)
                if all(flag or motif not in text for motif, flag in zip(motifs, flags)):
                    break
            rows.append(f"{text},{';'.join(str(int(flag)) for flag in flags)}")
        (out_dir / f"{name}.csv").write_text("\n".join(rows) + "\n")


MULTI_LABEL = register_task_kind(TaskKind(
    KIND, summary="train/dev/test.csv with header sequence,labels (labels: ';'-separated 0/1 flags, one per label)",
    partitions=REPLICATES, tokenize=_tokenize, objective=lambda task_spec: OBJECTIVE,
    evaluate_file=_evaluate_file, predict_file=_predict_file, text_template=True,
    synthetic={"dna_multilabel": write_multilabel_dna_task},
    validate_file=lambda path, alphabet: len(read_multilabel_csv(path, alphabet)),
    claims=lambda first_line: COLUMN in csv_columns(first_line) and "label" not in csv_columns(first_line),
    prediction_columns=_prediction_columns, score_predictions=_score_predictions,
    score_resamples=_score_resamples))
