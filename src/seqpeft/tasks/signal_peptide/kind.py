"""Registration of the ``signal_peptide`` task kind: SignalP 6.0 three-line FASTA (``>ACC|KINGDOM|TYPE|PARTITION``,
sequence, per-residue labels), cross-validation folds t{T}v{V} over its partitions 0-2, a CRF
objective (``seqpeft.tasks.signal_peptide.objective``), and the kingdom x type table and figures
(``seqpeft.tasks.signal_peptide.report``, rules signalp_table and signalp_figures)."""

from __future__ import annotations

import csv
import io
from dataclasses import asdict
from pathlib import Path

import numpy as np

from seqpeft.batching import Split
from seqpeft.errors import SeqpeftInputError
from seqpeft.tasks.registry import FOLDS, TaskKind, register_task_kind
from seqpeft.tasks.signal_peptide.objective import signal_peptide_objective, signalp_predictions
from seqpeft.tokenize import TokenizedSplit, _encode


def _tokenize(fasta: Path, tokenizer, arrays: dict, encode=None, alphabet: str | None = None) -> dict:
    """One cache split ``all`` with per-residue labels and the record fields the folds and metrics read."""
    from seqpeft.data import KINGDOMS, RESIDUE_LABELS, SP_TYPES
    from seqpeft.tasks.signal_peptide.fasta import read_signalp_fasta

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
    from seqpeft.data import KINGDOMS, RESIDUE_LABELS, SP_TYPES
    from seqpeft.tasks.signal_peptide.fasta import read_signalp_fasta
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
    last signal-peptide residue), PEFT-SP's convention and the one the metrics use. The input is a
    CSV or FASTA: plain, two-line with SignalP headers (PEFT-SP's input) or SignalP three-line.
    """
    import torch

    from seqpeft.data import SP_TYPES
    from seqpeft.sequences import read_sequences
    from seqpeft.atomic import write_text_atomic

    if getattr(predictor.model, "crf", None) is None:
        raise SeqpeftInputError(input_path, "this per-residue model has no signal-peptide CRF.",
                                fix="pass the artifacts directory of a signal_peptide run.")
    ids, sequences = read_sequences(Path(input_path), alphabet=predictor.alphabet)
    split = _residue_split(predictor, sequences)
    predicted = signalp_predictions(predictor.model, split, predictor.tokenizer.pad_token_id, predictor.max_length,
                                    predictor.batch_size, torch.device("cpu"))
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(list(PEFT_SP_COLUMNS) + ["id", "prediction", "cleavage_site"] + [f"prob_{name}" for name in SP_TYPES])
    for record_id, type_index, site, row in zip(ids, predicted["type"], predicted["site"], predicted["probabilities"]):
        name = SP_TYPES[int(type_index)]
        rounded = "[" + ", ".join(str(round(float(p), 3)) for p in row) + "]"
        writer.writerow([int(type_index), name, int(site), rounded, record_id, name, int(site)] + [f"{p:.6f}" for p in row])
    write_text_atomic(Path(output_path), buffer.getvalue())
    return len(ids)


def _settings(task_spec: dict | None) -> dict:
    from seqpeft.tasks.signal_peptide.regions import SignalPeptideSettings

    return {"signal_peptide": asdict(SignalPeptideSettings.from_task(task_spec))}


SIGNAL_PEPTIDE = register_task_kind(TaskKind(
    "signal_peptide", summary="a SignalP 6.0 three-line FASTA (per-residue labels; SP type, kingdom and partition "
    "in each header)", partitions=FOLDS, tokenize=_tokenize, objective=signal_peptide_objective,
    evaluate_file=_evaluate_file, predict_file=_predict_file, alphabet="protein", per_residue=True,
    sharding_conflict="the signal-peptide CRF runs outside the sharded forward pass", settings=_settings,
    outputs=("signalp_table.csv", "figures/{task}/signalp_mcc.png", "figures/{task}/signalp_mcc.svg",
             "figures/{task}/signalp_cleavage_w0.png", "figures/{task}/signalp_cleavage_w0.svg")))
