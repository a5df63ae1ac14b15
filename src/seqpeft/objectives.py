"""Training objectives by task kind: what the loss is, what extra modules train, how dev/test are scored.

The training loop stays one loop: it asks the task kind's objective for the head width, the
modules to attach (the signal-peptide CRF), the loss of a micro-batch and the evaluation dict,
whose ``selection`` value picks the best checkpoint (dev MCC for sequence classification;
detection MCC + cleavage-site MCC, kingdom-averaged, for signal peptides as PEFT-SP selects).
Evaluation is two steps, per-sequence predictions and the score of a whole split, so that the
ranks of a multi-process job can each predict a share and score the gathered predictions.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

import numpy as np

from seqpeft.errors import SeqpeftInputError
from seqpeft.metrics import classification_metrics
from seqpeft.predict import flat_predictions, predict_sequences


@dataclass(frozen=True)
class Objective:
    name: str
    num_outputs: Callable[[int], int]
    attach: Callable[[Any], None]
    loss: Callable[..., Any]  # (model, logits, labels, attention, split, indices) -> summed loss tensor
    normaliser: Callable[[list, np.ndarray], int]  # (collated micro-batches, batch indices) -> divisor
    predict: Callable[..., dict]  # (model, split, pad_id, max_length, batch_size, device) -> per-sequence arrays
    score: Callable[[Any, dict], dict]  # (split, predictions) -> metrics

    def evaluate(self, model, split, pad_id: int, max_length: int, batch_size: int, device) -> dict:
        return self.score(split, self.predict(model, split, pad_id, max_length, batch_size, device))


def _classification_loss(model, logits, labels, attention, split, indices):
    import torch

    return torch.nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]), labels.reshape(-1),
                                             ignore_index=-100, reduction="sum")


def _classification_predict(model, split, pad_id, max_length, batch_size, device) -> dict:
    return predict_sequences(model, split, pad_id, max_length, batch_size, device)


def _classification_score(split, predictions: dict) -> dict:
    """Without a ``selection`` key the loop selects on ``mcc``."""
    return classification_metrics(*flat_predictions(predictions))


def _crf_outputs(num_labels: int) -> int:
    from seqpeft.signalp_crf import NUM_STATES

    return NUM_STATES


def _attach_crf(model) -> None:
    from seqpeft.signalp_crf import SignalPeptideCRF

    model.crf = SignalPeptideCRF()


def _state_table():
    """[SP type, residue label] -> CRF state."""
    from seqpeft.data import RESIDUE_LABELS, SP_TYPES
    from seqpeft.signalp_crf import gold_states

    return np.stack([gold_states(np.arange(len(RESIDUE_LABELS)), t) for t in range(len(SP_TYPES))])


def _crf_inputs(logits, labels, attention, split, indices):
    import torch

    from seqpeft.signalp_crf import residue_emissions

    emissions, mask = residue_emissions(logits, attention, split.leading_specials)
    residue_labels = labels[:, split.leading_specials:].clamp(min=0)
    types = torch.as_tensor(np.asarray(split.extra["sp_type"])[indices], dtype=torch.long, device=labels.device)
    table = torch.as_tensor(_state_table(), device=labels.device)
    states = table[types.unsqueeze(1), residue_labels]
    return emissions.float(), states, mask


def _crf_loss(model, logits, labels, attention, split, indices):
    emissions, states, mask = _crf_inputs(logits, labels, attention, split, indices)
    return model.crf.nll(emissions, states, mask)


def signalp_predictions(model, split, pad_id: int, max_length: int, batch_size: int, device) -> dict[str, np.ndarray]:
    """Predicted type index, cleavage site and type probabilities per sequence (split order), plus
    the summed CRF NLL when the split carries labels."""
    from seqpeft.signalp_regions import RegionCRF, region_predict

    predict = region_predict if isinstance(getattr(model, "crf", None), RegionCRF) else _signalp_predict
    predicted = predict(model, split, pad_id, max_length, batch_size, device)
    if "nll" in predicted:
        predicted["nll"] = float(predicted["nll"].sum())
    return predicted


def _signalp_predict(model, split, pad_id: int, max_length: int, batch_size: int, device) -> dict[str, np.ndarray]:
    """Per sequence (split order): type index, cleavage site, type probabilities and, when the
    split carries labels, the CRF negative log-likelihood."""
    from seqpeft.signalp_crf import decode, predict_in_split_order

    labelled = "sp_type" in split.extra

    def score_batch(indices, logits, labels, attention, emissions, mask) -> dict:
        types, sites, probabilities = decode(model.crf, emissions, mask)
        batch = {"type": types, "site": sites, "probabilities": probabilities}
        if labelled:
            _, states, _ = _crf_inputs(logits, labels.to(logits.device), attention, split, indices)
            batch["nll"] = model.crf.nll(emissions, states, mask, reduction="none").cpu().numpy()
        return batch

    return predict_in_split_order(model, split, pad_id, max_length, batch_size, device, score_batch)


def _true_sites(split) -> np.ndarray:
    from seqpeft.data import RESIDUE_LABELS

    sp_letters = [RESIDUE_LABELS.index(letter) for letter in "STLP"]
    sites = []
    for index in range(len(split.data)):
        positions = np.flatnonzero(np.isin(split.data.residue_labels(index), sp_letters))
        sites.append(int(positions[-1]) + 1 if positions.size else -1)
    return np.array(sites, dtype=np.int64)


def _signalp_score(split, predicted: dict) -> dict:
    from sklearn.metrics import f1_score, precision_score, recall_score

    from seqpeft.data import KINGDOMS, SP_TYPES
    from seqpeft.signalp import kingdom_type_table, mean_mcc2, selection_score

    names = np.array(SP_TYPES)
    true_type, pred_type = names[np.asarray(split.extra["sp_type"])], names[predicted["type"]]
    kingdom = np.array(KINGDOMS)[np.asarray(split.extra["kingdom"])]
    true_site = _true_sites(split)
    table = kingdom_type_table(kingdom, true_type, pred_type, true_site, predicted["site"])
    residues = split.data.lengths - split.leading_specials - 1
    selection = selection_score(kingdom, true_type, pred_type, true_site, predicted["site"], residues)
    return {
        "mcc": mean_mcc2(table),
        "accuracy": float(np.mean(true_type == pred_type)),
        "f1": float(f1_score(true_type, pred_type, average="macro", zero_division=0)),
        "precision": float(precision_score(true_type, pred_type, average="macro", zero_division=0)),
        "recall": float(recall_score(true_type, pred_type, average="macro", zero_division=0)),
        "loss": float(predicted["nll"].sum()) / max(len(split.data), 1),
        **selection,
        "signalp": table,
    }


def loss_module(model, objective: Objective):
    """The objective's summed loss of a micro-batch as one module call ``(input_ids, attention,
    labels, split, indices)``. DDP must see every parameter the loss uses (the signal-peptide CRF)
    inside the forward it wraps; used outside, DDP counts their gradients as ready twice."""
    import torch

    class ObjectiveLoss(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.model = model

        def forward(self, input_ids, attention, labels, split, indices):
            return objective.loss(self.model, self.model(input_ids, attention), labels, attention, split, indices)

    return ObjectiveLoss()


OBJECTIVES: dict[str, Objective] = {
    "sequence_classification": Objective(
        "sequence_classification", num_outputs=lambda n: n, attach=lambda model: None, loss=_classification_loss,
        normaliser=lambda prepared, indices: sum(int((labels != -100).sum()) for _, _, labels in prepared),
        predict=_classification_predict, score=_classification_score),
    "signal_peptide": Objective(
        "signal_peptide", num_outputs=_crf_outputs,
        attach=_attach_crf, loss=_crf_loss, normaliser=lambda prepared, indices: len(indices),
        predict=_signalp_predict, score=_signalp_score),
}


def objective_for(kind: str, task_spec: dict | None = None) -> Objective:
    """The task kind's objective; a signal-peptide task with ``signal_peptide.labels: regions``
    gets the 37-state region CRF (``seqpeft.signalp_regions``)."""
    if kind not in OBJECTIVES:
        raise SeqpeftInputError(None, f"task kind {kind!r} has no training objective.", fix=f"use one of {sorted(OBJECTIVES)}.")
    if kind == "signal_peptide":
        from seqpeft.signalp_regions import SignalPeptideSettings

        settings = SignalPeptideSettings.from_task(task_spec)
        if settings.labels == "regions":
            return _region_objective(settings)
    return OBJECTIVES[kind]


def _region_objective(settings) -> Objective:
    """The ``signal_peptide`` objective with region labels: the 37-state CRF and its regulariser,
    scored as the ``types`` objective is."""
    from seqpeft.signalp_region_labels import NUM_REGION_STATES
    from seqpeft.signalp_regions import RegionCRF, region_loss, region_predict

    def attach(model) -> None:
        model.crf = RegionCRF()

    types = OBJECTIVES["signal_peptide"]
    return Objective("signal_peptide", num_outputs=lambda n: NUM_REGION_STATES, attach=attach,
                     loss=region_loss(float(settings.region_regularization_alpha)), normaliser=types.normaliser,
                     predict=region_predict, score=types.score)
