"""Task kind ``sequence_classification``: one class per sequence (GUE-style CSVs).

Files: ``train.csv``, ``dev.csv``, ``test.csv`` in the task's directory, header ``sequence,label``
(``seqpeft.data.readers.read_labeled_csv``). Partitions are replicate seeds. Softmax head with summed
cross-entropy; dev MCC selects the checkpoint.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from seqpeft.util.errors import SeqpeftInputError
from seqpeft.training.metrics import classification_metrics
from seqpeft.core.objectives import Objective
from seqpeft.training.predict import flat_predictions, predict_sequences, write_sequence_predictions
from seqpeft.core.registry import REPLICATES, TaskKind, csv_columns, refuse_partition, register_task_kind
from seqpeft.data.tokenize import tokenize_csv_splits


def _loss(model, logits, labels, attention, split, indices):
    import torch

    return torch.nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]), labels.reshape(-1),
                                             ignore_index=-100, reduction="sum")


def _score(split, predictions: dict) -> dict:
    """Without a ``selection`` key the loop selects on ``mcc``."""
    return classification_metrics(*flat_predictions(predictions))


OBJECTIVE = Objective(
    "sequence_classification", num_outputs=lambda n: n, attach=lambda model: None, loss=_loss,
    normaliser=lambda prepared, indices: sum(int((labels != -100).sum()) for _, _, labels in prepared),
    predict=predict_sequences, score=_score)


def _tokenize(data_dir, tokenizer, arrays: dict, encode=None, alphabet: str = "dna") -> dict:
    from seqpeft.data.readers import check_label_sets, read_labeled_csv

    splits = {name: read_labeled_csv(Path(data_dir) / f"{name}.csv", alphabet=alphabet) for name in ("train", "dev", "test")}
    check_label_sets(splits["train"], {"dev": splits["dev"], "test": splits["test"]})
    return tokenize_csv_splits(tokenizer, splits, arrays, encode)


def check_labels_known(predictor, records) -> None:
    """A label the model has no output for is an input error at its line, not an IndexError in the loss."""
    if predictor.num_labels is None or records.labels is None:
        return
    unknown = np.flatnonzero((records.labels < 0) | (records.labels >= predictor.num_labels))
    if unknown.size:
        index = int(unknown[0])
        classes = ", ".join(str(c) for c in range(predictor.num_labels))
        names = predictor.label_names
        named = f" ({', '.join(f'{c} = {n}' for c, n in enumerate(names))})" if names and list(map(str, names)) != \
            [str(c) for c in range(predictor.num_labels)] else ""
        raise SeqpeftInputError(
            records.path, f"label {int(records.labels[index])} is not a class of this model, which knows "
            f"{predictor.num_labels} classes: {classes}{named} ({unknown.size} row(s) with unknown labels).",
            fix="code the labels as the model was trained (0 .. number of classes - 1), or evaluate with a model "
                "trained on these classes.", line=int(records.lines[index]))


def _evaluate_file(predictor, data_path: Path, partition=None) -> dict:
    """Accuracy, F1, MCC, precision, recall and loss on a labelled CSV (``sequence,label``)."""
    from seqpeft.data.readers import read_labeled_csv

    refuse_partition(data_path, partition)
    records = read_labeled_csv(Path(data_path), alphabet=predictor.alphabet)
    check_labels_known(predictor, records)
    split = predictor.split_for(records.sequences, records.labels, source=data_path)
    return predictor.evaluate(split)


def _softmax(logits: np.ndarray) -> np.ndarray:
    import torch

    return torch.softmax(torch.from_numpy(logits), dim=-1).numpy()


def _predict_file(predictor, input_path: Path, output_path: Path) -> int:
    """One row per input record: id, predicted label and one probability column per label."""
    return write_sequence_predictions(predictor, input_path, output_path, lambda n: None, _softmax,
                                      lambda row, names: names[int(row.argmax())],
                                      lambda count: [str(i) for i in range(count)])


def _validate_file(path: Path, alphabet: str) -> int:
    from seqpeft.data.readers import read_labeled_csv

    return len(read_labeled_csv(Path(path), alphabet=alphabet))
def _prediction_columns(split, predictions: dict) -> dict:
    """``example_id`` (0-based row of test.csv), ``label``, ``predicted`` and ``prob_<class>``."""
    logits = np.asarray(predictions["logits"], dtype=np.float64)
    shifted = np.exp(logits - logits.max(axis=1, keepdims=True))
    probabilities = shifted / shifted.sum(axis=1, keepdims=True)
    columns = {"example_id": np.arange(len(logits)), "label": np.asarray(predictions["labels"]).reshape(-1),
               "predicted": logits.argmax(axis=1)}
    columns.update({f"prob_{c}": probabilities[:, c] for c in range(probabilities.shape[1])})
    return columns


def _score_predictions(frame) -> float:
    """MCC of ``predicted`` against ``label``: the run's test MCC."""
    from seqpeft.training.metrics import fast_mcc

    return fast_mcc(np.asarray(frame["label"]), np.asarray(frame["predicted"]))


def _score_resamples(columns, picks: np.ndarray) -> np.ndarray:
    from seqpeft.training.metrics import resampled_mcc

    return resampled_mcc(np.asarray(columns["label"]), np.asarray(columns["predicted"]), picks)


SEQUENCE_CLASSIFICATION = register_task_kind(TaskKind(
    "sequence_classification", summary="train/dev/test.csv with header sequence,label (one class per sequence)",
    partitions=REPLICATES, tokenize=_tokenize, objective=lambda task_spec: OBJECTIVE,
    evaluate_file=_evaluate_file, predict_file=_predict_file, text_template=True,
    validate_file=_validate_file, claims=lambda first_line: "label" in csv_columns(first_line),
    prediction_columns=_prediction_columns, score_predictions=_score_predictions, score_resamples=_score_resamples))
