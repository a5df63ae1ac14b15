"""Evaluate and predict with a trained model outside the DAG (the ``seqpeft`` command's work).

A model is either a run's ``artifacts`` directory (written by every fine-tuning job) or a plain
Hugging Face checkpoint that carries its own classification head, like a published fine-tuned
Mistral-DNA model. Sequences are tokenized with the model's own tokenizer in one fast batch call.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from seqpeft.util.errors import SeqpeftInputError
from seqpeft.config.schema import ENTRY, default
from seqpeft.core.registry import objective_for, task_kind

# a checkpoint saved as *ForSequenceClassification classifies whole sequences: the kind that reads it
CHECKPOINT_HEAD_KIND = "sequence_classification"

# One device for the predictor's model (a QLoRA backbone included) and its inputs.
PREDICT_DEVICE = "cpu"


@dataclass
class Predictor:
    model: Any
    tokenizer: Any
    max_length: int
    task_kind: str  # what the model was trained for (seqpeft.tasks): how files are read and scored
    label_names: list[str] | None
    objective: Any  # the run's objective (seqpeft.core.objectives.Objective): its predictions and metrics
    batch_size: int = field(default_factory=lambda: default("training", "eval_batch_size"))  # as runs evaluate
    num_labels: int | None = None
    # letters new sequences may hold: the task's alphabet as the run tokenized it (seqpeft.core.registry)
    alphabet: str = field(default_factory=lambda: task_kind(CHECKPOINT_HEAD_KIND).alphabet_of(None))
    # A DSP-trained run's settings (artifacts' seqpeft.json): new sequences get the same template.
    dsp: dict | None = None
    source: Any = None  # the file being read, for messages

    def report_truncation(self, split, source: Any = None) -> int:
        """Say (stderr) how many sequences are longer than ``max_length`` tokens and are cut to
        it, as the workflow's jobs do; the count. Metrics and predictions see only the cut part."""
        import sys

        lengths = split.data.lengths
        cut = int((lengths > self.max_length).sum())
        if cut:
            print(f"[seqpeft] {source or 'input'}: {cut} of {len(lengths)} sequences are longer than max_length="
                  f"{self.max_length} tokens (the longest has {int(lengths.max())}) and are truncated to "
                  f"{self.max_length} tokens", file=sys.stderr)
        return cut
    # what the objective was built from (the artifacts' seqpeft.json): e.g. a regression target's scale
    objective_spec: dict = field(default_factory=dict)

    def evaluate(self, split) -> dict:
        """The objective's metrics on a labelled split, as the workflow computes them."""
        import torch

        self.report_truncation(split, self.source)
        return self.objective.evaluate(self.model, split, self.tokenizer.pad_token_id, self.max_length,
                                       self.batch_size, torch.device(PREDICT_DEVICE))

    def logits(self, split) -> np.ndarray:
        """Per-sequence logits in split order (labels, if the split has none, are placeholders)."""
        import torch

        self.report_truncation(split, self.source)
        return self.objective.predict(self.model, split, self.tokenizer.pad_token_id, self.max_length, self.batch_size,
                                      torch.device(PREDICT_DEVICE))["logits"]

    def split_for(self, sequences: list[str], labels: np.ndarray | None, source: Any = None):
        """A batching ``Split`` (see ``seqpeft.core.batching``) for raw sequences."""
        from seqpeft.data.tokenize import TokenizedSplit, _encode
        from seqpeft.core.batching import Split

        if self.dsp is not None:
            ids, offsets, truncated = self._dsp_encoder().encode(sequences, source=source)
            if truncated:
                print(f"[seqpeft] {len(truncated)} sequences lost nucleotides to fit max_length={self.max_length} "
                      "with the DSP template")
        else:
            ids, offsets = _encode(self.tokenizer, sequences)
        self.source = source
        if labels is None:
            labels = np.zeros(len(sequences), dtype=np.int64)
        labels = np.asarray(labels)
        labels = labels.astype(np.float32 if labels.dtype.kind == "f" else np.int64)  # regression targets stay real
        return Split(TokenizedSplit(ids, offsets, labels), per_residue=False)

    def _dsp_encoder(self):
        """The training run's encoder: its template, domain and nucleotide ids, this predictor's max_length."""
        from seqpeft.methods.dsp import DspEncoder, DspSettings

        fields = DspSettings.__dataclass_fields__
        settings = {key: value for key, value in self.dsp.items() if key in fields}
        settings["max_length"] = self.max_length
        if self.dsp.get("resolved_nucleotide_ids"):
            settings["nucleotide_ids"] = self.dsp["resolved_nucleotide_ids"]
        return DspEncoder(self.tokenizer, DspSettings.from_dict(settings))


# The command line has no model entry to set allow_pickle in: its fix for pickled weights.
PICKLE_FIX = ("convert the weights to safetensors where you trust them (from_pretrained, then save_pretrained with "
              "safe_serialization=True); `seqpeft evaluate`/`predict` load safetensors only.")


def load_predictor(model_dir: Path, adapter_dir: Path | None = None, max_length: int | None = None) -> Predictor:
    """``_load_predictor``, with a fix for pickled weights that the command line can follow."""
    from dataclasses import replace

    try:
        return _load_predictor(model_dir, adapter_dir, max_length)
    except SeqpeftInputError as error:
        if "allow_pickle" in error.fix:
            raise replace(error, fix=PICKLE_FIX) from None
        raise


def _load_predictor(model_dir: Path, adapter_dir: Path | None = None, max_length: int | None = None) -> Predictor:
    """A ready-to-run classifier from ``--model DIR [--adapter DIR]``.

    ``--model`` alone: a run's artifacts directory, or a checkpoint with a ``score`` head.
    ``--model`` + ``--adapter``: the base model and a run's artifacts trained on top of it.
    """
    from seqpeft.models.classifier import make_classifier
    from seqpeft.models.families import load_backbone
    from seqpeft.training.artifacts import load_trained

    model_dir = Path(model_dir)
    if adapter_dir is not None or (model_dir / "seqpeft.json").is_file():
        artifacts = Path(adapter_dir) if adapter_dir is not None else model_dir
        model, loaded, description = load_trained(artifacts, model_dir if adapter_dir is not None else None, PREDICT_DEVICE)
        kind = task_kind(description["task_kind"], where=artifacts / "seqpeft.json")
        return Predictor(model, loaded.tokenizer, int(max_length or description["max_length"]), kind.name,
                         description.get("label_names"), objective_for(kind.name, description),
                         dsp=description.get("dsp"), num_labels=int(description["num_labels"]),
                         # runs before alphabets were recorded read their kind's
                         alphabet=description.get("alphabet") or kind.alphabet_of(None), objective_spec=description)
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
    return Predictor(model, loaded.tokenizer, limit, CHECKPOINT_HEAD_KIND, None,
                     objective_for(CHECKPOINT_HEAD_KIND), num_labels=num_labels)


def evaluate_file(predictor: Predictor, data_path: Path, partition: int | None = None) -> dict:
    """The workflow's test metrics of the model's task kind on a labelled file (a CSV for sequence
    classification, a SignalP 6.0 three-line FASTA for signal peptides, where ``partition`` keeps
    only that partition's records, e.g. 0 for a t0v1 run's test set)."""
    return task_kind(predictor.task_kind).evaluate_file(predictor, Path(data_path), partition)


def predict_file(predictor: Predictor, input_path: Path, output_path: Path) -> int:
    """One CSV row per input record with the model's predictions (columns by task kind)."""
    return task_kind(predictor.task_kind).predict_file(predictor, Path(input_path), Path(output_path))
