"""The ``signal_peptide`` objective: emissions per residue into a CRF over SP types (8 states,
``labels: types``) or SignalP 6.0's 37 region states (``labels: regions``); scored with PEFT-SP's
metrics, and the checkpoint selected on detection MCC + cleavage-site MCC, kingdom-averaged on the
validation partition, as PEFT-SP selects."""

from __future__ import annotations

import numpy as np

from seqpeft.core.objectives import Objective


def _crf_outputs(num_labels: int) -> int:
    from seqpeft.tasks.signal_peptide.crf import NUM_STATES

    return NUM_STATES


def _attach_crf(model) -> None:
    from seqpeft.tasks.signal_peptide.crf import SignalPeptideCRF

    model.crf = SignalPeptideCRF()


def _state_table():
    """[SP type, residue label] -> CRF state."""
    from seqpeft.data.readers import RESIDUE_LABELS, SP_TYPES
    from seqpeft.tasks.signal_peptide.crf import gold_states

    return np.stack([gold_states(np.arange(len(RESIDUE_LABELS)), t) for t in range(len(SP_TYPES))])


def _crf_inputs(logits, labels, attention, split, indices):
    import torch

    from seqpeft.tasks.signal_peptide.crf import residue_emissions

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
    from seqpeft.tasks.signal_peptide.regions import RegionCRF, region_predict

    predict = region_predict if isinstance(getattr(model, "crf", None), RegionCRF) else _signalp_predict
    predicted = predict(model, split, pad_id, max_length, batch_size, device)
    if "nll" in predicted:
        predicted["nll"] = float(predicted["nll"].sum())
    return predicted


def _signalp_predict(model, split, pad_id: int, max_length: int, batch_size: int, device) -> dict[str, np.ndarray]:
    """Per sequence (split order): type index, cleavage site, type probabilities and, when the
    split carries labels, the CRF negative log-likelihood."""
    from seqpeft.tasks.signal_peptide.crf import decode, predict_in_split_order

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
    from seqpeft.data.readers import RESIDUE_LABELS

    sp_letters = [RESIDUE_LABELS.index(letter) for letter in "STLP"]
    sites = []
    for index in range(len(split.data)):
        positions = np.flatnonzero(np.isin(split.data.residue_labels(index), sp_letters))
        sites.append(int(positions[-1]) + 1 if positions.size else -1)
    return np.array(sites, dtype=np.int64)


def _signalp_score(split, predicted: dict) -> dict:
    from sklearn.metrics import f1_score, precision_score, recall_score

    from seqpeft.data.readers import KINGDOMS, SP_TYPES
    from seqpeft.tasks.signal_peptide.metrics import kingdom_type_table, mean_mcc2, selection_score

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


TYPES_OBJECTIVE = Objective(
    "signal_peptide", num_outputs=_crf_outputs,
    attach=_attach_crf, loss=_crf_loss, normaliser=lambda prepared, indices: len(indices),
    predict=_signalp_predict, score=_signalp_score)


def signal_peptide_objective(task_spec: dict | None) -> Objective:
    """The 8-state objective, or with ``signal_peptide.labels: regions`` the 37-state region CRF
    and its regulariser (``seqpeft.tasks.signal_peptide.regions``), scored the same way."""
    from seqpeft.tasks.signal_peptide.region_labels import NUM_REGION_STATES
    from seqpeft.tasks.signal_peptide.regions import RegionCRF, SignalPeptideSettings, region_loss, region_predict

    settings = SignalPeptideSettings.from_task(task_spec)
    if settings.labels != "regions":
        return TYPES_OBJECTIVE

    def attach(model) -> None:
        # soft constraints are PEFT-SP's CRF whole: its penalty, last states and random initialisation
        soft = settings.constraints == "soft"
        model.crf = RegionCRF(settings.constraints, init="peft_sp" if soft else "zeros")

    return Objective("signal_peptide", num_outputs=lambda n: NUM_REGION_STATES, attach=attach,
                     loss=region_loss(float(settings.region_regularization_alpha)), normaliser=TYPES_OBJECTIVE.normaliser,
                     predict=region_predict, score=_signalp_score)
