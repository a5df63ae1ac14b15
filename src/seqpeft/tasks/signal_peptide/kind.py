"""Registration of the ``signal_peptide`` task kind: SignalP 6.0 three-line FASTA (``>ACC|KINGDOM|TYPE|PARTITION``,
sequence, per-residue labels), cross-validation folds t{T}v{V} over its partitions 0-2, a CRF
objective (``seqpeft.tasks.signal_peptide.objective``), and the kingdom x type table and figures
(``seqpeft.analysis.signal_peptide``, rules signalp_table and signalp_figures)."""

from __future__ import annotations

import csv
import math
import io
from dataclasses import asdict
from pathlib import Path

import numpy as np

from seqpeft.core.batching import Split
from seqpeft.util.errors import SeqpeftInputError
from seqpeft.core.registry import FOLDS, TaskKind, register_task_kind
from seqpeft.tasks.signal_peptide.objective import signal_peptide_objective, signalp_predictions
from seqpeft.data.readers import resolve_alphabet
from seqpeft.data.tokenize import TokenizedSplit, _encode


def _tokenize(fasta: Path, tokenizer, arrays: dict, encode=None, alphabet: str | None = None) -> dict:
    """One cache split ``all`` with per-residue labels and the record fields the folds and metrics read."""
    from seqpeft.data.readers import KINGDOMS, RESIDUE_LABELS, SP_TYPES
    from seqpeft.data.signalp import read_signalp_fasta

    records = read_signalp_fasta(fasta, alphabet or resolve_alphabet("protein"))
    ids, offsets = _encode(tokenizer, [record.sequence for record in records])
    lengths = np.diff(offsets)
    residues = np.array([len(record.sequence) for record in records])
    specials = lengths - residues
    if len(set(specials.tolist())) > 1:
        bad = int(np.argmax(specials != specials[0]))
        raise SeqpeftInputError(fasta, "the tokenizer does not give one token per residue, so per-residue labels cannot be aligned.",
                                record=records[bad].accession, fix="use a residue-level tokenizer (e.g. the ESM vocabulary).")
    label_index = {letter: index for index, letter in enumerate(RESIDUE_LABELS)}
    label_offsets = np.zeros(len(records) + 1, dtype=np.int64)
    np.cumsum(residues, out=label_offsets[1:])
    arrays["all_ids"], arrays["all_offsets"] = ids, offsets
    arrays["all_labels"] = np.fromiter((label_index[c] for r in records for c in r.labels), dtype=np.int8,
                                       count=int(label_offsets[-1]))
    arrays["all_label_offsets"] = label_offsets
    arrays["all_partition"] = np.array([r.partition for r in records], dtype=np.int8)
    arrays["all_kingdom"] = np.array([KINGDOMS.index(r.kingdom) for r in records], dtype=np.int8)
    arrays["all_sp_type"] = np.array([SP_TYPES.index(r.sp_type) for r in records], dtype=np.int8)
    arrays["all_accession"] = np.array([r.accession for r in records])
    arrays["all_sequence"] = np.array([r.sequence for r in records])  # region labels read the residues
    return {"num_labels": len(RESIDUE_LABELS), "label_names": list(RESIDUE_LABELS), "splits": ["all"],
            "leading_specials": 1 if int(specials[0]) > 0 else 0}


def _evaluate_file(predictor, fasta: Path, partition: int | None = None) -> dict:
    """The workflow's signal-peptide test metrics (the run's objective) on a SignalP 6.0 FASTA:
    mean MCC2 as ``mcc``, type accuracy/F1/precision/recall, CRF loss, detection and cleavage-site
    MCC, and the kingdom x type table under ``signalp``."""
    from seqpeft.data.readers import KINGDOMS, RESIDUE_LABELS, SP_TYPES
    from seqpeft.data.signalp import read_signalp_fasta
    if getattr(predictor.model, "crf", None) is None:
        raise SeqpeftInputError(fasta, "this per-residue model has no signal-peptide CRF.",
                                fix="pass the artifacts directory of a signal_peptide run.")
    records = read_signalp_fasta(fasta, predictor.alphabet)
    if partition is not None:
        found = sorted({r.partition for r in records})
        records = [r for r in records if r.partition == partition]
        if not records:
            raise SeqpeftInputError(fasta, f"no record of partition {partition} (the file has partitions "
                                    f"{', '.join(map(str, found))}).", fix="pass one of those with --partition.")
    ids, offsets = _encode(predictor.tokenizer, [r.sequence for r in records])
    residues = np.array([len(r.sequence) for r in records], dtype=np.int64)
    label_offsets = np.zeros(len(records) + 1, dtype=np.int64)
    np.cumsum(residues, out=label_offsets[1:])
    letter = {name: index for index, name in enumerate(RESIDUE_LABELS)}
    labels = np.fromiter((letter[c] for r in records for c in r.labels), dtype=np.int8, count=int(label_offsets[-1]))
    leading = 1 if int(np.diff(offsets)[0] - residues[0]) > 0 else 0
    extra = {"kingdom": np.array([KINGDOMS.index(r.kingdom) for r in records], dtype=np.int8),
             "sp_type": np.array([SP_TYPES.index(r.sp_type) for r in records], dtype=np.int8)}
    split = Split(TokenizedSplit(ids, offsets, labels, label_offsets), per_residue=True, leading_specials=leading,
                  extra=extra)
    predictor.source = fasta
    return predictor.evaluate(split)


def _residue_split(predictor, sequences: list[str]):
    """A per-residue ``Split`` with placeholder labels (collate needs them; unlabelled input has none)."""
    ids, offsets = _encode(predictor.tokenizer, sequences)
    residues = np.array([len(s) for s in sequences], dtype=np.int64)
    label_offsets = np.zeros(len(sequences) + 1, dtype=np.int64)
    np.cumsum(residues, out=label_offsets[1:])
    leading = 1 if predictor.tokenizer.cls_token_id is not None else 0
    data = TokenizedSplit(ids, offsets, np.zeros(int(label_offsets[-1]), dtype=np.int8), label_offsets)
    return Split(data, per_residue=True, leading_specials=leading)


PEFT_SP_COLUMNS = ("sp_type_id", "sp_type_name", "cv_position", "sp_type_probabilities")


def _predict_file(predictor, input_path: Path, output_path: Path) -> int:
    """One row per protein, PEFT-SP's ``predict.py`` columns first: ``sp_type_id`` (index into
    NO_SP, SP, LIPO, TAT, TATLIPO, PILIN), ``sp_type_name``, ``cv_position`` (the cleavage site,
    -1 for NO_SP) and ``sp_type_probabilities`` (the six probabilities rounded to 3 decimals, as a
    list in PEFT-SP's README form ``[0.005, 0.975, ...]``); then seqpeft's own columns: ``id``,
    ``prediction`` and ``cleavage_site`` (the same type and site, for existing readers) and one
    full-precision ``prob_<TYPE>`` per type.

    The cleavage site is the 0-based index of the first mature residue (the position after the
    last signal-peptide residue), PEFT-SP's convention and the one the metrics use; -1 for a
    protein predicted NO_SP, and (region CRF) for one whose Viterbi path has no signal peptide. The input is a
    CSV or FASTA: plain, two-line with SignalP headers (PEFT-SP's input) or SignalP three-line.
    """
    import torch

    from seqpeft.data.readers import SP_TYPES
    from seqpeft.data.sequences import read_sequences
    from seqpeft.util.atomic import write_text_atomic

    if getattr(predictor.model, "crf", None) is None:
        raise SeqpeftInputError(input_path, "this per-residue model has no signal-peptide CRF.",
                                fix="pass the artifacts directory of a signal_peptide run.")
    ids, sequences = read_sequences(Path(input_path), alphabet=predictor.alphabet)
    split = _residue_split(predictor, sequences)
    predictor.report_truncation(split, input_path)
    predicted = signalp_predictions(predictor.model, split, predictor.tokenizer.pad_token_id, predictor.max_length,
                                    predictor.batch_size, torch.device("cpu"))
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(list(PEFT_SP_COLUMNS) + ["id", "prediction", "cleavage_site"] + [f"prob_{name}" for name in SP_TYPES])
    for record_id, type_index, site, row in zip(ids, predicted["type"], predicted["site"], predicted["probabilities"]):
        name = SP_TYPES[int(type_index)]
        site = -1 if name == "NO_SP" else site  # the region CRF's Viterbi site does not follow the type
        rounded = "[" + ", ".join(str(round(float(p), 3)) for p in row) + "]"
        writer.writerow([int(type_index), name, int(site), rounded, record_id, name, int(site)] + [f"{p:.6f}" for p in row])
    write_text_atomic(Path(output_path), buffer.getvalue())
    return len(ids)


def _validate_file(path: Path, alphabet: str) -> int:
    """A SignalP 6.0 three-line FASTA (its residues are always checked against the protein alphabet)."""
    from seqpeft.data.signalp import read_signalp_fasta

    return len(read_signalp_fasta(path))


def _claims(first_line: str) -> bool:
    from seqpeft.data.sequences import looks_like_signalp

    return first_line.startswith(">") and looks_like_signalp(first_line)
def _prediction_columns(split, predictions: dict) -> dict:
    """One row per protein: ``example_id`` (accession), ``kingdom``, the true ``sp_type``,
    ``true_cleavage_site`` and residue labels (``true_labels``, one letter per residue), then
    PEFT-SP's prediction columns (``sp_type_id``, ``sp_type_name``, ``cv_position``) and one
    ``prob_<TYPE>`` per type."""
    from seqpeft.data.readers import KINGDOMS, RESIDUE_LABELS, SP_TYPES
    from seqpeft.tasks.signal_peptide.objective import _true_sites

    letters = np.array(list(RESIDUE_LABELS))
    types = np.asarray(predictions["type"], dtype=np.int64)
    columns = {
        "example_id": np.asarray(split.extra["accession"]).astype(str),
        "kingdom": np.array(KINGDOMS)[np.asarray(split.extra["kingdom"])],
        "sp_type": np.array(SP_TYPES)[np.asarray(split.extra["sp_type"])],
        "true_cleavage_site": _true_sites(split),
        "true_labels": ["".join(letters[split.data.residue_labels(i)]) for i in range(len(split.data))],
        "sp_type_id": types, "sp_type_name": np.array(SP_TYPES)[types],
        # as `seqpeft predict` writes it: -1 for a protein predicted NO_SP (the region CRF's Viterbi
        # site does not follow the type; PEFT-SP's metrics mask it the same way)
        "cv_position": np.where(types == SP_TYPES.index("NO_SP"), -1, np.asarray(predictions["site"], dtype=np.int64)),
    }
    probabilities = np.asarray(predictions["probabilities"], dtype=np.float64)
    columns.update({f"prob_{name}": probabilities[:, index] for index, name in enumerate(SP_TYPES)})
    return columns


def _score_predictions(frame) -> float:
    """Mean MCC2 over kingdoms x SP types (PEFT-SP's headline score, the run's test ``mcc``): the
    ``mcc2`` cells of ``kingdom_type_table`` alone, which is all a bootstrap resample needs."""
    from seqpeft.tasks.signal_peptide.metrics import REPORTED_TYPES, mcc

    kingdom, truth, predicted = (np.asarray(frame[key]) for key in ("kingdom", "sp_type", "sp_type_name"))
    values = []
    for name in np.unique(kingdom):
        rows = kingdom == name
        for sp_type in REPORTED_TYPES:
            positives = truth[rows] == sp_type
            if positives.any():
                values.append(mcc(positives, predicted[rows] == sp_type))
    return float(np.mean(values)) if values else math.nan


def _score_resamples(columns, picks: np.ndarray) -> np.ndarray:
    """``_score_predictions`` of every resample at once: each example coded as (kingdom, true type,
    predicted type), one ``bincount`` per resample row gives every kingdom's confusion counts, and
    each kingdom x reported type's binary MCC (counted where the resample holds a positive) is
    read off them."""
    from seqpeft.tasks.signal_peptide.metrics import REPORTED_TYPES
    from seqpeft.training.metrics import mean_of_defined

    kingdoms, kingdom_codes = np.unique(np.asarray(columns["kingdom"]), return_inverse=True)
    truth, predicted = np.asarray(columns["sp_type"]), np.asarray(columns["sp_type_name"])
    types = sorted(set(REPORTED_TYPES) | set(truth.tolist()) | set(predicted.tolist()))
    index = {name: i for i, name in enumerate(types)}
    true_codes = np.array([index[name] for name in truth], dtype=np.int64)
    predicted_codes = np.array([index[name] for name in predicted], dtype=np.int64)
    cells = len(kingdoms) * len(types) * len(types)
    codes = (kingdom_codes.reshape(-1) * len(types) + true_codes) * len(types) + predicted_codes
    draws = len(picks)
    counts = np.bincount((codes[picks] + np.arange(draws)[:, None] * cells).ravel(), minlength=draws * cells)
    counts = counts.reshape(draws, len(kingdoms), len(types), len(types)).astype(float)
    reported = [index[name] for name in REPORTED_TYPES]
    total = counts.sum(axis=(2, 3))[:, :, None]
    tp = np.diagonal(counts, axis1=2, axis2=3)[:, :, reported]
    positives, called = counts.sum(axis=3)[:, :, reported], counts.sum(axis=2)[:, :, reported]
    fn, fp = positives - tp, called - tp
    tn = total - tp - fp - fn
    denominator = np.sqrt((tp + fp) * (tp + fn) * (tn + fp) * (tn + fn))
    with np.errstate(invalid="ignore", divide="ignore"):
        values = np.where(denominator > 0, (tp * tn - fp * fn) / np.where(denominator > 0, denominator, 1.0), 0.0)
    counted = np.where(positives > 0, values, math.nan).reshape(draws, -1)
    return mean_of_defined(counted.T, draws)


def _settings(task_spec: dict | None) -> dict:
    from seqpeft.tasks.signal_peptide.regions import SignalPeptideSettings

    return {"signal_peptide": asdict(SignalPeptideSettings.from_task(task_spec))}


SIGNAL_PEPTIDE = register_task_kind(TaskKind(
    "signal_peptide", summary="a SignalP 6.0 three-line FASTA (per-residue labels; SP type, kingdom and partition "
    "in each header)", partitions=FOLDS, tokenize=_tokenize, objective=signal_peptide_objective,
    evaluate_file=_evaluate_file, predict_file=_predict_file, alphabet="protein", per_residue=True,
    sharding_conflict="the signal-peptide CRF runs outside the sharded forward pass", settings=_settings,
    outputs=("signalp_table.csv", "figures/{task}/signalp_mcc.png", "figures/{task}/signalp_mcc.svg",
             "figures/{task}/signalp_cleavage_w0.png", "figures/{task}/signalp_cleavage_w0.svg"),
    validate_file=_validate_file, claims=_claims,
    prediction_columns=_prediction_columns, score_predictions=_score_predictions, score_resamples=_score_resamples))
