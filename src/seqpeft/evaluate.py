"""Evaluate and predict with a trained model outside the DAG (the ``seqpeft`` command's work).

A model is either a run's ``artifacts`` directory (written by every fine-tuning job) or a plain
Hugging Face checkpoint that carries its own classification head, like a published fine-tuned
Mistral-DNA model. Sequences are tokenized with the model's own tokenizer in one fast batch call.
"""

from __future__ import annotations

import csv
import io
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from seqpeft.errors import SeqpeftInputError
from seqpeft.schema import ENTRY, default


@dataclass
class Predictor:
    model: Any
    tokenizer: Any
    max_length: int
    per_residue: bool
    label_names: list[str] | None
    batch_size: int = field(default_factory=lambda: default("training", "eval_batch_size"))  # as runs evaluate
    num_labels: int | None = None
    # A DSP-trained run's settings (artifacts' seqpeft.json): new sequences get the same template.
    dsp: dict | None = None

    def split_for(self, sequences: list[str], labels: np.ndarray | None, source: Any = None):
        """A batching ``Split`` (see ``seqpeft.batching``) for raw sequences."""
        from seqpeft.tokenize import TokenizedSplit, _encode
        from seqpeft.batching import Split

        if self.dsp is not None:
            ids, offsets, truncated = self._dsp_encoder().encode(sequences, source=source)
            if truncated:
                print(f"[seqpeft] {len(truncated)} sequences lost nucleotides to fit max_length={self.max_length} "
                      "with the DSP template")
        else:
            ids, offsets = _encode(self.tokenizer, sequences)
        if labels is None:
            labels = np.zeros(len(sequences), dtype=np.int64)
        return Split(TokenizedSplit(ids, offsets, np.asarray(labels, dtype=np.int64)), per_residue=False)

    def _dsp_encoder(self):
        """The training run's encoder: its template, domain and nucleotide ids, this predictor's max_length."""
        from seqpeft.dsp import DspEncoder, DspSettings

        fields = DspSettings.__dataclass_fields__
        settings = {key: value for key, value in self.dsp.items() if key in fields}
        settings["max_length"] = self.max_length
        if self.dsp.get("resolved_nucleotide_ids"):
            settings["nucleotide_ids"] = self.dsp["resolved_nucleotide_ids"]
        return DspEncoder(self.tokenizer, DspSettings.from_dict(settings))


def load_predictor(model_dir: Path, adapter_dir: Path | None = None, max_length: int | None = None) -> Predictor:
    """A ready-to-run classifier from ``--model DIR [--adapter DIR]``.

    ``--model`` alone: a run's artifacts directory, or a checkpoint with a ``score`` head.
    ``--model`` + ``--adapter``: the base model and a run's artifacts trained on top of it.
    """
    from seqpeft.classifier import make_classifier
    from seqpeft.models import load_backbone
    from seqpeft.artifacts import load_trained

    model_dir = Path(model_dir)
    if adapter_dir is not None or (model_dir / "seqpeft.json").is_file():
        artifacts = Path(adapter_dir) if adapter_dir is not None else model_dir
        model, loaded, description = load_trained(artifacts, model_dir if adapter_dir is not None else None)
        return Predictor(model, loaded.tokenizer, int(max_length or description["max_length"]), description["per_residue"],
                         description.get("label_names"), dsp=description.get("dsp"),
                         num_labels=int(description["num_labels"]))
    import json

    config = json.loads((model_dir / "config.json").read_text()) if (model_dir / "config.json").is_file() else {}
    num_labels = len(config.get("id2label", {})) or 2
    loaded = load_backbone(model_dir, {}, num_labels=num_labels)
    if not loaded.pretrained_head:
        raise SeqpeftInputError(model_dir, "has no sequence-classification head to evaluate.",
                                fix="pass a run's artifacts directory with --adapter, or a checkpoint saved as *ForSequenceClassification.")
    model = make_classifier(loaded, num_labels)
    model.eval()
    # the checkpoint's own position limit, else the length seqpeft gives a model entry without one
    limit = max_length or int(config.get("max_position_embeddings") or default("models", ENTRY, "max_length"))
    return Predictor(model, loaded.tokenizer, limit, False, None, num_labels=num_labels)


def evaluate_file(predictor: Predictor, data_path: Path, partition: int | None = None) -> dict:
    """Accuracy, F1, MCC, precision, recall and loss on a labelled CSV (``sequence,label``); for a
    signal-peptide model, the workflow's SignalP metrics on a SignalP 6.0 three-line FASTA
    (``partition``: only that partition's records, e.g. 0 for a t0v1 run's test set)."""
    import torch

    from seqpeft.data import read_labeled_csv
    from seqpeft.metrics import classification_metrics
    from seqpeft.predict import predict_split

    if predictor.per_residue:
        return evaluate_signal_peptides(predictor, Path(data_path), partition)
    if partition is not None:
        raise SeqpeftInputError(data_path, "--partition selects records of a SignalP FASTA; this model classifies whole "
                                "sequences from a CSV.", fix="leave out --partition.")
    records = read_labeled_csv(Path(data_path), alphabet="dna")
    check_labels_known(predictor, records)
    split = predictor.split_for(records.sequences, records.labels, source=data_path)
    labels, logits, loss = predict_split(predictor.model, split, predictor.tokenizer.pad_token_id, predictor.max_length,
                                         predictor.batch_size, torch.device("cpu"))
    return classification_metrics(labels, logits, loss)


def check_labels_known(predictor: Predictor, records) -> None:
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


def evaluate_signal_peptides(predictor: Predictor, fasta: Path, partition: int | None = None) -> dict:
    """The workflow's signal-peptide test metrics (``seqpeft.objectives``) on a SignalP 6.0 FASTA:
    mean MCC2 as ``mcc``, type accuracy/F1/precision/recall, CRF loss, detection and cleavage-site
    MCC, and the kingdom x type table under ``signalp``."""
    import torch

    from seqpeft.data import KINGDOMS, RESIDUE_LABELS, SP_TYPES
    from seqpeft.signalp_fasta import read_signalp_fasta
    from seqpeft.objectives import objective_for
    from seqpeft.tokenize import TokenizedSplit, _encode
    from seqpeft.batching import Split

    if getattr(predictor.model, "crf", None) is None:
        raise SeqpeftInputError(fasta, "this per-residue model has no signal-peptide CRF.",
                                fix="pass the artifacts directory of a signal_peptide run.")
    records = read_signalp_fasta(fasta)
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
    return objective_for("signal_peptide").evaluate(predictor.model, split, predictor.tokenizer.pad_token_id,
                                                    predictor.max_length, predictor.batch_size, torch.device("cpu"))


def predict_file(predictor: Predictor, input_path: Path, output_path: Path) -> int:
    """Write one row per input record: id, predicted label and one probability column per label."""
    import torch

    from seqpeft.sequences import read_sequences
    from seqpeft.atomic import write_text_atomic
    from seqpeft.predict import predict_split

    if predictor.per_residue:
        return predict_signal_peptides(predictor, input_path, output_path)
    ids, sequences = read_sequences(Path(input_path), alphabet="dna")
    split = predictor.split_for(sequences, None, source=input_path)
    _, logits, _ = predict_split(predictor.model, split, predictor.tokenizer.pad_token_id, predictor.max_length,
                                 predictor.batch_size, torch.device("cpu"))
    probabilities = torch.softmax(torch.from_numpy(logits), dim=-1).numpy()
    names = predictor.label_names or [str(i) for i in range(probabilities.shape[1])]
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(["id", "prediction"] + [f"prob_{name}" for name in names])
    for record_id, row in zip(ids, probabilities):
        writer.writerow([record_id, names[int(row.argmax())]] + [f"{p:.6f}" for p in row])
    write_text_atomic(Path(output_path), buffer.getvalue())
    return len(ids)


def _residue_split(predictor: Predictor, sequences: list[str]):
    """A per-residue ``Split`` with placeholder labels (collate needs them; unlabelled input has none)."""
    from seqpeft.tokenize import TokenizedSplit, _encode
    from seqpeft.batching import Split

    ids, offsets = _encode(predictor.tokenizer, sequences)
    residues = np.array([len(s) for s in sequences], dtype=np.int64)
    label_offsets = np.zeros(len(sequences) + 1, dtype=np.int64)
    np.cumsum(residues, out=label_offsets[1:])
    leading = 1 if predictor.tokenizer.cls_token_id is not None else 0
    data = TokenizedSplit(ids, offsets, np.zeros(int(label_offsets[-1]), dtype=np.int8), label_offsets)
    return Split(data, per_residue=True, leading_specials=leading)


PEFT_SP_COLUMNS = ("sp_type_id", "sp_type_name", "cv_position", "sp_type_probabilities")


def predict_signal_peptides(predictor: Predictor, input_path: Path, output_path: Path) -> int:
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
    from seqpeft.objectives import signalp_predictions
    from seqpeft.atomic import write_text_atomic

    if getattr(predictor.model, "crf", None) is None:
        raise SeqpeftInputError(input_path, "this per-residue model has no signal-peptide CRF.",
                                fix="pass the artifacts directory of a signal_peptide run.")
    ids, sequences = read_sequences(Path(input_path), alphabet="protein")
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
