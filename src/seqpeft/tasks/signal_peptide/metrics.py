"""Signal-peptide metrics exactly as PEFT-SP (after SignalP 5/6) defines them.

Every number is per kingdom x SP type (NO_SP is never a reported type), computed on one test
partition. A cell with no true positives in the partition (ARCHAEA SP in partition 0) is NaN for
that run rather than an error; the aggregation reports the mean over defined runs and the count.

Sites are "the position after the last SP residue", i.e. the SP length (0-based index of the first
mature residue); -1 means "no site". Only differences between sites matter, so any consistent
convention gives the same numbers.
"""

from __future__ import annotations

import math

import numpy as np

from seqpeft.data.readers import KINGDOMS, SP_TYPES

WINDOWS = (0, 1, 2, 3)
REPORTED_TYPES = tuple(t for t in SP_TYPES if t != "NO_SP")
METRIC_COLUMNS = ("mcc2", "mcc1") + tuple(f"cs_precision_w{w}" for w in WINDOWS) + tuple(f"cs_recall_w{w}" for w in WINDOWS)


def mcc(truth: np.ndarray, predicted: np.ndarray) -> float:
    """Binary MCC; 0.0 when a margin is empty (sklearn's convention), NaN for no sequences."""
    truth, predicted = np.asarray(truth, bool), np.asarray(predicted, bool)
    if truth.size == 0:
        return math.nan
    tp = float(np.sum(truth & predicted))
    tn = float(np.sum(~truth & ~predicted))
    fp = float(np.sum(~truth & predicted))
    fn = float(np.sum(truth & ~predicted))
    denominator = math.sqrt((tp + fp) * (tp + fn) * (tn + fp) * (tn + fn))
    return (tp * tn - fp * fn) / denominator if denominator else 0.0


def sp_length(labels: str) -> int:
    """Cleavage site of a label string: the index after the last S/T/L/P residue, -1 when none."""
    positions = [i for i, letter in enumerate(labels) if letter in "STLP"]
    return positions[-1] + 1 if positions else -1


def type_metrics(true_type: np.ndarray, pred_type: np.ndarray, true_site: np.ndarray, pred_site: np.ndarray,
                 sp_type: str) -> dict[str, float]:
    """MCC2, MCC1 and cleavage-site precision/recall at w = 0..3 for one type within one kingdom.

    Masking: the true site becomes -1 where the true type is not ``sp_type``; the predicted site
    becomes -1 where the predicted type is neither ``sp_type`` nor NO_SP (a site predicted under
    another SP type never counts, one predicted with NO_SP keeps counting as PEFT-SP does).
    """
    true_type, pred_type = np.asarray(true_type), np.asarray(pred_type)
    positives = true_type == sp_type
    if not positives.any():
        return {column: math.nan for column in METRIC_COLUMNS}
    result = {"mcc2": mcc(positives, pred_type == sp_type)}
    restricted = positives | (true_type == "NO_SP")
    result["mcc1"] = mcc(positives[restricted], (pred_type == sp_type)[restricted])
    true_masked = np.where(positives, np.asarray(true_site), -1)
    pred_masked = np.where((pred_type == sp_type) | (pred_type == "NO_SP"), np.asarray(pred_site), -1)
    both = (true_masked != -1) & (pred_masked != -1)
    distance = np.abs(pred_masked - true_masked)
    predicted_count = int(np.sum(pred_masked != -1))
    true_count = int(np.sum(true_masked != -1))
    for w in WINDOWS:
        correct = int(np.sum(both & (distance <= w)))
        result[f"cs_precision_w{w}"] = correct / predicted_count if predicted_count else math.nan
        result[f"cs_recall_w{w}"] = correct / true_count if true_count else math.nan
    return result


def kingdom_type_table(kingdom: np.ndarray, true_type: np.ndarray, pred_type: np.ndarray,
                       true_site: np.ndarray, pred_site: np.ndarray) -> dict[str, dict[str, dict[str, float]]]:
    """``{kingdom: {type: {metric: value}}}`` for every kingdom and every SP type (NaN where undefined)."""
    kingdom, true_type, pred_type = np.asarray(kingdom), np.asarray(true_type), np.asarray(pred_type)
    true_site, pred_site = np.asarray(true_site), np.asarray(pred_site)
    table = {}
    for name in KINGDOMS:
        rows = kingdom == name
        table[name] = {t: type_metrics(true_type[rows], pred_type[rows], true_site[rows], pred_site[rows], t)
                       for t in REPORTED_TYPES}
    return table


def mean_mcc2(table: dict) -> float:
    """The single score of an SP run (the shared Pareto figures' ``test.mcc``): mean defined MCC2."""
    values = [cell["mcc2"] for types in table.values() for cell in types.values() if not math.isnan(cell["mcc2"])]
    return float(np.mean(values)) if values else math.nan


def cleavage_mcc(true_site: np.ndarray, pred_site: np.ndarray, lengths: np.ndarray) -> float:
    """MCC of per-residue "a cleavage site is here" tags over all residues of the sequences."""
    truth, predicted = [], []
    for site_t, site_p, length in zip(true_site, pred_site, lengths):
        row_t, row_p = np.zeros(int(length), bool), np.zeros(int(length), bool)
        if 0 <= site_t < length:
            row_t[site_t] = True
        if 0 <= site_p < length:
            row_p[site_p] = True
        truth.append(row_t)
        predicted.append(row_p)
    return mcc(np.concatenate(truth), np.concatenate(predicted)) if truth else math.nan


def selection_score(kingdom: np.ndarray, true_type: np.ndarray, pred_type: np.ndarray, true_site: np.ndarray,
                    pred_site: np.ndarray, lengths: np.ndarray) -> dict[str, float]:
    """PEFT-SP's model-selection score (its ``report_metrics_kingdom_averaged``): detection MCC +
    cleavage-site MCC, each averaged over the kingdoms present in the split.

    Detection MCC is the multi-class MCC of the six types (true vs predicted) within a kingdom.
    Cleavage-site MCC is the multi-class MCC of the site index (-1 = none predicted) over the
    kingdom's sequences that truly have a signal peptide; a kingdom without one is left out of that
    average. ``lengths`` is unused (kept for the call signature).
    """
    from sklearn.metrics import matthews_corrcoef

    kingdom, true_type, pred_type = np.asarray(kingdom), np.asarray(true_type), np.asarray(pred_type)
    true_site, pred_site = np.asarray(true_site), np.asarray(pred_site)
    detection, cleavage = [], []
    for name in KINGDOMS:
        rows = kingdom == name
        if not rows.any():
            continue
        detection.append(float(matthews_corrcoef(true_type[rows], pred_type[rows])))
        with_site = rows & (true_site != -1)
        if with_site.any():
            cleavage.append(float(matthews_corrcoef(true_site[with_site], pred_site[with_site])))
    if not detection:
        return {"detection_mcc": math.nan, "cs_mcc": math.nan, "selection": math.nan}
    det = float(np.mean(detection))
    cs = float(np.mean(cleavage)) if cleavage else math.nan
    return {"detection_mcc": det, "cs_mcc": cs, "selection": det + cs if cleavage else det}


def run_rows(metrics_files):
    """Long table of the runs' ``metrics.json`` (``test.signalp``): one row per run x kingdom x SP
    type, one column per metric."""
    import json
    from pathlib import Path

    import pandas as pd

    from seqpeft.util.errors import SeqpeftInputError

    rows = []
    for path in metrics_files:
        raw = json.loads(Path(path).read_text())
        table = raw.get("test", {}).get("signalp")
        if not isinstance(table, dict):
            raise SeqpeftInputError(path, "has no per-kingdom signal-peptide table (test.signalp).",
                                    fix="rerun the fine-tuning job with this version of seqpeft.")
        for kingdom, types in table.items():
            for sp_type, cell in types.items():
                rows.append({"task": raw["task"], "model": raw["model"], "method": raw["method"],
                             "partition": str(raw["partition"]), "kingdom": kingdom, "sp_type": sp_type,
                             **{c: math.nan if cell.get(c) is None else float(cell[c]) for c in METRIC_COLUMNS}})
    return pd.DataFrame(rows, columns=["task", "model", "method", "partition", "kingdom", "sp_type", *METRIC_COLUMNS])
