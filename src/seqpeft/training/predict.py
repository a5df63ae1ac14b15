"""Predictions and metrics of a model on a split: per sequence (so that the ranks of a
multi-process job can each predict a share), flattened, and scored by a task kind's objective."""

from __future__ import annotations

import csv
import io
from pathlib import Path
from typing import Callable

import numpy as np

from seqpeft.util import progress
from seqpeft.core.batching import Split, collate
from seqpeft.training.metrics import classification_metrics


def cross_entropy_rows(logits, labels):
    """Summed cross-entropy and labelled positions of each row (positions labelled -100 left out)."""
    import torch

    per_position = torch.nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]), labels.reshape(-1),
                                                     ignore_index=-100, reduction="none").reshape(labels.shape)
    kept = (labels != -100).reshape(len(labels), -1)
    return per_position.reshape(len(labels), -1).sum(dim=1), kept.sum(dim=1)


def predict_sequences(model, split: Split, pad_id: int, max_length: int, batch_size: int, device,
                      row_loss: Callable = cross_entropy_rows) -> dict[str, np.ndarray]:
    """Per-sequence outputs in split order, in inference mode, batched by length: ``labels``,
    ``logits``, ``loss`` (summed ``row_loss``, cross-entropy unless given) and ``count`` (labelled
    positions).

    Per-residue splits give each sequence's residue labels and logits (specials and padding
    removed) as object arrays. Per sequence, so that the shards of a multi-process evaluation
    can be merged and scored as one split.
    """
    import torch

    model.eval()
    count = len(split.data)
    order = np.argsort(-split.data.lengths, kind="stable")
    real = split.data.labels.dtype.kind == "f"  # regression targets
    labels_out = np.empty(count, dtype=object) if split.per_residue else np.zeros((count, *split.data.labels.shape[1:]),
                                                                                 dtype=np.float32 if real else np.int64)
    logits_out: np.ndarray | None = np.empty(count, dtype=object) if split.per_residue else None
    losses, counts = np.zeros(count), np.zeros(count, dtype=np.int64)
    with torch.inference_mode():
        for start in progress.iterate(range(0, len(order), batch_size), "eval"):
            indices = order[start:start + batch_size]
            input_ids, attention, labels = collate(split, indices, pad_id, max_length, torch)
            logits = model(input_ids.to(device), attention.to(device)).float().cpu()
            row_losses, row_counts = row_loss(logits, labels)
            losses[indices], counts[indices] = row_losses.numpy(), row_counts.numpy()
            if split.per_residue:
                kept = labels != -100
                for row, index in enumerate(indices):
                    labels_out[index] = labels[row][kept[row]].numpy()
                    logits_out[index] = logits[row][kept[row]].numpy()
            else:
                if logits_out is None:
                    logits_out = np.zeros((count, logits.shape[-1]), dtype=np.float32)
                labels_out[indices] = labels.numpy()
                logits_out[indices] = logits.numpy()
    if logits_out is None:
        logits_out = np.zeros((0, 0), dtype=np.float32)
    return {"labels": labels_out, "logits": logits_out, "loss": losses, "count": counts}


def flat_predictions(predictions: dict[str, np.ndarray]) -> tuple[np.ndarray, np.ndarray, float]:
    """(labels, logits, mean loss) with per-residue outputs flattened."""
    labels, logits = predictions["labels"], predictions["logits"]
    if labels.dtype == object:
        width = next((item.shape[-1] for item in logits if item.size), 1)
        labels = np.concatenate(list(labels)) if len(labels) else np.zeros(0, dtype=np.int64)
        logits = np.concatenate([item.reshape(-1, width) for item in logits]) if len(logits) else np.zeros((0, width))
    return labels, logits, float(predictions["loss"].sum()) / max(int(predictions["count"].sum()), 1)


def predict_split(model, split: Split, pad_id: int, max_length: int, batch_size: int, device) -> tuple[np.ndarray, np.ndarray, float]:
    """(labels, logits, mean loss) over a split; per-residue tasks give flattened residue positions."""
    return flat_predictions(predict_sequences(model, split, pad_id, max_length, batch_size, device))


def evaluate_split(model, split: Split, pad_id: int, max_length: int, batch_size: int, device) -> dict[str, float]:
    return classification_metrics(*predict_split(model, split, pad_id, max_length, batch_size, device))


def evaluate(objective, model, split: Split, pad_id: int, max_length: int, batch_size: int, device, ranks) -> dict:
    """The objective's metrics on a split; with several ranks each predicts its share and all
    score the gathered predictions, so every rank gets the same metrics (and stops together)."""
    return evaluate_with_predictions(objective, model, split, pad_id, max_length, batch_size, device, ranks)[0]


def evaluate_with_predictions(objective, model, split: Split, pad_id: int, max_length: int, batch_size: int, device,
                              ranks) -> tuple[dict, dict]:
    """(metrics, the per-sequence predictions they were scored from), as :func:`evaluate`; the test
    split keeps its predictions for the run's predictions_test.parquet."""
    if not ranks.distributed:
        predictions = objective.predict(model, split, pad_id, max_length, batch_size, device)
        return objective.score(split, predictions), predictions
    rows = ranks.eval_rows(len(split.data))
    predictions = objective.predict(model, split.subset(rows), pad_id, max_length, batch_size, device)
    ranks.reshard(model)
    predictions = ranks.gather_rows(rows, predictions, len(split.data))
    return objective.score(split, predictions), predictions


def write_sequence_predictions(predictor, input_path: Path, output_path: Path, placeholder_labels, probabilities,
                               prediction, default_names) -> int:
    """The CSV every whole-sequence kind's ``seqpeft predict`` writes: ``id``, ``prediction`` (from
    a row of probabilities) and one ``prob_<name>`` per output. ``probabilities`` maps logits."""
    from seqpeft.util.atomic import write_text_atomic
    from seqpeft.data.sequences import read_sequences

    ids, sequences = read_sequences(Path(input_path), alphabet=predictor.alphabet)
    split = predictor.split_for(sequences, placeholder_labels(len(sequences)), source=input_path)
    rows = probabilities(predictor.logits(split))
    names = predictor.label_names or default_names(rows.shape[1])
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(["id", "prediction"] + [f"prob_{name}" for name in names])
    for record_id, row in zip(ids, rows):
        writer.writerow([record_id, prediction(row, names)] + [f"{p:.6f}" for p in row])
    write_text_atomic(Path(output_path), buffer.getvalue())
    return len(ids)
