"""SignalP 6.0 / PEFT-SP region labels: the multi-tag CRF over the 37 region states of
``seqpeft.tasks.signal_peptide.region_labels``, its regulariser, settings and training objective.

Selected by a signal-peptide task's ``signal_peptide.labels: regions`` (``types``, the 8-state
CRF of ``seqpeft.tasks.signal_peptide.crf``, is the default).

The CRF is a multi-tag linear-chain CRF: the loss is ``log Z - log(sum of the scores of every
allowed path inside the bitmap)``; transitions, first and last states are constrained by PEFT-SP's
``--constrain_crf`` lists, hard by default (forbidden = never), or with ``constraints: soft`` as
PEFT-SP's code has them (a forbidden move, first or last state scores -20, and its literal last
states, which leave out Sec/SPI's I/M/O). A path never leaves the block of states of the type it
starts in, so P(type) is the block's marginal mass (PEFT-SP averages it over positions).

The cleavage site is decoded as PEFT-SP decodes it (``bert_crf`` -> ``crf.decode`` ->
``tagged_seq_to_cs_multiclass``): the last residue of the constrained Viterbi path in SP_C,
LIPO_CS, TAT_C, TATLIPO_CS or PILIN_P, plus 1 (-1 when the path has none), independently of the
predicted type; the metrics' masking (``seqpeft.tasks.signal_peptide.metrics.type_metrics``)
drops sites predicted under another SP type. Prediction, metrics and model selection all read it.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from seqpeft.data.readers import SP_TYPES
from seqpeft.util.errors import SeqpeftInputError
from seqpeft.config.schema import ENTRY, with_defaults
from seqpeft.tasks.signal_peptide.crf import LinearChainCRF
from seqpeft.tasks.signal_peptide.region_labels import (AMINO_ACIDS, C_STATES, HC_TYPES, H_STATES, IN_SIGNAL, NH_TYPES, NUM_REGION_STATES, N_STATES, STATE, STATE_TYPE, FORBIDDEN_SCORE, allowed_moves, peft_sp_last_states, region_bitmap)


# ---- the CRF ----

# PEFT-SP's multi_tag_crf.do_transition_constraint: the score of a forbidden move, first or last state.
SOFT_PENALTY = -20.0
# The states whose last residue ends the signal peptide (PEFT-SP's sp_tokens [5, 11, 19, 26, 31]).
SITE_STATES = tuple(STATE[name] for name in ("SP_C", "LIPO_CS", "TAT_C", "TATLIPO_CS", "PILIN_P"))


class RegionCRF(LinearChainCRF):
    """Linear-chain CRF over the 37 region states with multi-tag targets; ``constraints``
    ``hard`` (forbidden moves never taken) or ``soft`` (PEFT-SP's code: they score ``SOFT_PENALTY``
    and its literal last-state list applies); ``init`` ``zeros`` (seqpeft) or ``peft_sp`` (the
    random initialisation PEFT-SP's LoRA runs keep: transitions uniform(+-0.577), start and end
    pytorch-crf's uniform(+-0.1))."""

    def __init__(self, constraints: str = "hard", init: str = "zeros"):
        allowed, first, last = allowed_moves()
        if constraints == "soft":
            last = peft_sp_last_states()
        super().__init__(allowed, first, last)
        self.forbidden = SOFT_PENALTY if constraints == "soft" else FORBIDDEN_SCORE
        if init == "peft_sp":
            with torch.no_grad():
                self.transitions.uniform_(-0.577, 0.577)
                self.start.uniform_(-0.1, 0.1)
                self.end.uniform_(-0.1, 0.1)

    def nll_and_marginals(self, emissions: torch.Tensor, bitmap: torch.Tensor, mask: torch.Tensor,
                          marginals: bool = True) -> tuple[torch.Tensor, torch.Tensor | None]:
        """(-log P(path inside ``bitmap`` [batch, length, states]) per sequence, marginals or None).

        One forward pass over the free and the bitmap-restricted emissions together (and one
        backward pass for the marginals): half the sequential steps of separate calls.
        """
        batch = emissions.shape[0]
        both = torch.cat([emissions, emissions.masked_fill(~bitmap, FORBIDDEN_SCORE)])
        alpha = self._forward_scores(both, torch.cat([mask, mask]))
        log_z = self._final(alpha[:batch], mask)
        nll = log_z - self._final(alpha[batch:], mask)
        if not marginals:
            return nll, None
        beta = self._backward_scores(emissions, mask)
        return nll, torch.exp(alpha[:batch] + beta - log_z[:, None, None]) * mask.unsqueeze(2)

    def nll(self, emissions: torch.Tensor, bitmap: torch.Tensor, mask: torch.Tensor, reduction: str = "sum") -> torch.Tensor:
        """-log P(path inside ``bitmap`` [batch, length, states]), summed or per sequence (``"none"``)."""
        per_sequence = self.nll_and_marginals(emissions, bitmap, mask, marginals=False)[0]
        return per_sequence if reduction == "none" else per_sequence.sum()


def _group(marginals: torch.Tensor, states) -> torch.Tensor:
    return marginals[..., list(states)].sum(dim=-1)


def type_probabilities(marginals: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """[batch, len(SP_TYPES)]: each type's states' marginal mass averaged over residues (PEFT-SP)."""
    blocks = torch.stack([_group(marginals, np.flatnonzero(STATE_TYPE == k)) for k in range(len(SP_TYPES))], dim=-1)
    return (blocks * mask.unsqueeze(2)).sum(dim=1) / mask.sum(dim=1, keepdim=True)


def viterbi_site(path: list[int]) -> int:
    """PEFT-SP's ``tagged_seq_to_cs_multiclass``: 1 + the last residue in a site state, -1 if none."""
    positions = [t for t, state in enumerate(path) if state in SITE_STATES]
    return positions[-1] + 1 if positions else -1


def decode_viterbi(crf: "RegionCRF", emissions: torch.Tensor, marginals: torch.Tensor,
                   mask: torch.Tensor) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(type index, cleavage site, type probabilities) per sequence: the type from the marginals,
    the site from the unrestricted constrained Viterbi path (so it may be -1 for a predicted SP type
    or set for a predicted NO_SP, exactly as in PEFT-SP)."""
    probabilities = type_probabilities(marginals, mask)
    sites = np.array([viterbi_site(path) for path in crf.viterbi(emissions, mask)], dtype=np.int64)
    return probabilities.argmax(dim=1).cpu().numpy(), sites, probabilities.detach().cpu().numpy()


# ---- the region regulariser ----


def region_similarity(marginals: torch.Tensor, mask: torch.Tensor, residues: torch.Tensor,
                      types: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per sequence, the cosine similarity of the amino-acid composition of the n and h regions,
    and of h and c, each residue counted with its marginal probability of lying in the region
    (SignalP 6.0's regulariser, as PEFT-SP uses it). ``residues`` [batch, length, 20] one-hot
    amino acids. n-h counts for SP and LIPO records only, h-c for SP and TAT; 0 elsewhere."""
    weights = marginals * mask.unsqueeze(2)
    regions = torch.stack([_group(weights, N_STATES), _group(weights, H_STATES), _group(weights, C_STATES)], dim=-1)
    counts = torch.einsum("blr,bla->bar", regions, residues.to(regions.dtype))  # [batch, 20, 3]
    frequencies = counts / counts.sum(dim=1, keepdim=True).clamp(min=1e-12)
    n_h = nn.functional.cosine_similarity(frequencies[:, :, 0], frequencies[:, :, 1], dim=1, eps=1e-12)
    h_c = nn.functional.cosine_similarity(frequencies[:, :, 1], frequencies[:, :, 2], dim=1, eps=1e-12)
    zero = torch.zeros_like(n_h)
    n_h = torch.where(torch.isin(types, torch.tensor(NH_TYPES, device=types.device)), n_h, zero)
    h_c = torch.where(torch.isin(types, torch.tensor(HC_TYPES, device=types.device)), h_c, zero)
    return n_h, h_c


def one_hot_residues(sequences: list[str], length: int) -> torch.Tensor:
    """[batch, length, 20] one-hot of the 20 standard amino acids (other letters and padding: zeros)."""
    index = {aa: i for i, aa in enumerate(AMINO_ACIDS)}
    out = torch.zeros(len(sequences), length, len(AMINO_ACIDS))
    for b, sequence in enumerate(sequences):
        for t, residue in enumerate(sequence[:length]):
            if residue in index:
                out[b, t, index[residue]] = 1.0
    return out


# ---- settings ----


@dataclass(frozen=True)
class SignalPeptideSettings:
    """A signal-peptide task's ``signal_peptide:`` block (its defaults: the config schema's); a
    method variant's own ``signal_peptide:`` block overrides it (``seqpeft.config.settings.FinetuneJob``)."""

    labels: str
    region_regularization_alpha: float
    constraints: str

    KEYS = ("labels", "region_regularization_alpha", "constraints")

    @classmethod
    def from_task(cls, task_spec: dict | None) -> "SignalPeptideSettings":
        values = dict((task_spec or {}).get("signal_peptide") or {})
        unknown = sorted(set(values) - set(cls.KEYS))
        if unknown:
            raise SeqpeftInputError(f"signal_peptide.{unknown[0]}", "unknown key.",
                                    fix=f"use {', '.join(cls.KEYS)}.")
        settings = cls(**with_defaults(values, "tasks", ENTRY, "signal_peptide"))
        if settings.labels not in ("types", "regions"):
            raise SeqpeftInputError("signal_peptide.labels", f"{settings.labels!r} is not a label scheme.",
                                    fix="use types (8 states) or regions (SignalP 6.0's 37 region states).")
        if not float(settings.region_regularization_alpha) >= 0:
            raise SeqpeftInputError("signal_peptide.region_regularization_alpha", "must be >= 0.", fix="e.g. 0.5 (PEFT-SP).")
        if settings.constraints not in CONSTRAINTS:
            raise SeqpeftInputError("signal_peptide.constraints", f"{settings.constraints!r} is not a constraint mode.",
                                    fix=f"use one of {', '.join(CONSTRAINTS)}.")
        if settings.constraints == "soft" and settings.labels != "regions":
            raise SeqpeftInputError("signal_peptide.constraints", "soft constraints are a setting of the region CRF.",
                                    fix="set labels: regions, or leave constraints at hard.")
        return settings


# hard: forbidden moves never taken; soft: PEFT-SP's CRF as its code has it (RegionCRF).
CONSTRAINTS = ("hard", "soft")


# ---- the training objective of ``labels: regions`` ----


def _bitmaps(split, indices, length: int, device) -> torch.Tensor:
    from seqpeft.data.readers import RESIDUE_LABELS

    if "sequence" not in split.extra:
        raise SeqpeftInputError(None, "this tokenized signal-peptide cache has no residue sequences (it predates region labels).",
                                fix="delete the task's cache under results/cache and rerun the tokenize rule.")
    out = np.ones((len(indices), length, NUM_REGION_STATES), dtype=bool)  # padding: anything
    for row, index in enumerate(np.asarray(indices)):
        letters = "".join(RESIDUE_LABELS[i] for i in split.data.residue_labels(int(index)))
        bits = region_bitmap(letters, str(split.extra["sequence"][index]), SP_TYPES[int(split.extra["sp_type"][index])])
        out[row, :min(len(bits), length)] = bits[:length]
    return torch.as_tensor(out, device=device)


def _sequences(split, indices) -> list[str]:
    return [str(split.extra["sequence"][i]) for i in np.asarray(indices)]


def region_loss(alpha: float):
    def loss(model, logits, labels, attention, split, indices):
        from seqpeft.tasks.signal_peptide.crf import residue_emissions

        emissions, mask = residue_emissions(logits, attention, split.leading_specials)
        emissions = emissions.float()
        bitmap = _bitmaps(split, indices, emissions.shape[1], emissions.device)
        nll, marginals = model.crf.nll_and_marginals(emissions, bitmap, mask, marginals=alpha > 0)
        total = nll.sum()
        if alpha > 0:
            types = torch.as_tensor(np.asarray(split.extra["sp_type"])[np.asarray(indices)], dtype=torch.long,
                                    device=emissions.device)
            residues = one_hot_residues(_sequences(split, indices), emissions.shape[1]).to(emissions.device)
            n_h, h_c = region_similarity(marginals, mask, residues, types)
            total = total + alpha * (n_h.sum() + h_c.sum())  # the loop divides by the batch size: PEFT-SP's means
        return total
    return loss


def region_predict(model, split, pad_id: int, max_length: int, batch_size: int, device) -> dict[str, np.ndarray]:
    """As ``objectives._signalp_predict`` for the region CRF: type, site and type probabilities per
    sequence (split order), plus the CRF NLL when the split carries labels."""
    from seqpeft.tasks.signal_peptide.crf import predict_in_split_order

    labelled = "sp_type" in split.extra

    def score_batch(indices, logits, labels, attention, emissions, mask) -> dict:
        batch = {}
        if labelled:
            bitmap = _bitmaps(split, indices, emissions.shape[1], emissions.device)
            nll, marginals = model.crf.nll_and_marginals(emissions, bitmap, mask)
            batch["nll"] = nll.cpu().numpy()
        else:
            marginals = model.crf.marginals(emissions, mask)
        batch["type"], batch["site"], batch["probabilities"] = decode_viterbi(model.crf, emissions, marginals, mask)
        return batch

    return predict_in_split_order(model, split, pad_id, max_length, batch_size, device, score_batch)
