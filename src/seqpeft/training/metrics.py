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


def fast_mcc(truth: np.ndarray, predicted: np.ndarray) -> float:
    """Matthews correlation of integer class labels, as ``sklearn.metrics.matthews_corrcoef``
    computes it (Gorodkin's multi-class form from the confusion matrix; 0 where it is undefined),
    without its input checks: the statistics score thousands of bootstrap resamples with it."""
    truth = np.asarray(truth, dtype=np.int64)
    predicted = np.asarray(predicted, dtype=np.int64)
    if truth.size == 0:
        return math.nan
    offset = min(int(truth.min()), int(predicted.min()))
    width = max(int(truth.max()), int(predicted.max())) - offset + 1
    confusion = np.bincount((truth - offset) * width + (predicted - offset), minlength=width * width).reshape(width, width)
    t, p = confusion.sum(axis=1).astype(float), confusion.sum(axis=0).astype(float)
    correct, total = float(np.trace(confusion)), float(truth.size)
    cov_ytyp = correct * total - t @ p
    cov_ypyp, cov_ytyt = total * total - p @ p, total * total - t @ t
    if cov_ypyp * cov_ytyt == 0:
        return 0.0
    return float(cov_ytyp / math.sqrt(cov_ytyt * cov_ypyp))


def resampled_mcc(truth: np.ndarray, predicted: np.ndarray, picks: np.ndarray) -> np.ndarray:
    """``fast_mcc`` of every resample at once: row b of ``picks`` (example indices) is one resample
    of ``truth``/``predicted``; its confusion matrix comes from one ``bincount`` over all rows."""
    truth = np.asarray(truth, dtype=np.int64)
    predicted = np.asarray(predicted, dtype=np.int64)
    picks = np.asarray(picks, dtype=np.int64)
    draws, size = picks.shape
    if size == 0:
        return np.full(draws, math.nan)
    offset = min(int(truth.min()), int(predicted.min()))
    width = max(int(truth.max()), int(predicted.max())) - offset + 1
    cells = (truth[picks] - offset) * width + (predicted[picks] - offset) + np.arange(draws)[:, None] * width * width
    confusion = np.bincount(cells.ravel(), minlength=draws * width * width).reshape(draws, width, width).astype(float)
    t, p = confusion.sum(axis=2), confusion.sum(axis=1)
    correct, total = np.trace(confusion, axis1=1, axis2=2), float(size)
    cov_ytyp = correct * total - (t * p).sum(axis=1)
    cov_ypyp, cov_ytyt = total * total - (p * p).sum(axis=1), total * total - (t * t).sum(axis=1)
    denominator = cov_ytyt * cov_ypyp
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(denominator == 0, 0.0, cov_ytyp / np.sqrt(np.where(denominator == 0, 1.0, denominator)))


def mean_of_defined(values, draws: int) -> np.ndarray:
    """Per resample (column), the mean of ``values``' rows (labels, targets) that are defined
    (not NaN); NaN where none is. ``values``: one array of ``draws`` scores per row."""
    values = np.asarray(values, dtype=float).reshape(-1, draws)
    defined = ~np.isnan(values)
    counts = defined.sum(axis=0)
    return np.where(counts > 0, np.where(defined, values, 0.0).sum(axis=0) / np.maximum(counts, 1), math.nan)
