"""Classification metrics, from scikit-learn, with one shape for every task."""

from __future__ import annotations

import math

import numpy as np


def classification_metrics(labels: np.ndarray, logits: np.ndarray, loss: float) -> dict[str, float]:
    """Accuracy, macro F1/precision/recall, MCC and mean loss for predictions ``argmax(logits)``.

    ``labels`` equal to -100 (special tokens, padding) are left out, so per-residue tasks use the
    same function on flattened arrays.
    """
    from sklearn.metrics import accuracy_score, f1_score, matthews_corrcoef, precision_score, recall_score

    labels = np.asarray(labels).reshape(-1)
    predictions = np.asarray(logits).reshape(labels.shape[0], -1).argmax(axis=1)
    keep = labels != -100
    labels, predictions = labels[keep], predictions[keep]
    if labels.size == 0:
        return {key: math.nan for key in ("accuracy", "f1", "mcc", "precision", "recall")} | {"loss": float(loss)}
    return {
        "accuracy": float(accuracy_score(labels, predictions)),
        "f1": float(f1_score(labels, predictions, average="macro", zero_division=0)),
        "mcc": float(matthews_corrcoef(labels, predictions)),
        "precision": float(precision_score(labels, predictions, average="macro", zero_division=0)),
        "recall": float(recall_score(labels, predictions, average="macro", zero_division=0)),
        "loss": float(loss),
    }
