"""SignalP 6.0 / PEFT-SP region labels: 37 CRF states with n-, h- and c-regions per SP type.

Selected by a signal-peptide task's ``signal_peptide.labels: regions`` (``types``, the 8-state
CRF of ``seqpeft.signalp_crf``, is the default).

Label processing (SignalP 6.0, Teufel et al. 2022; the rules PEFT-SP trains with) turns a record's
7-letter labels (I, O, M, S, T, L, P) and its type into a *bitmap*: at every residue, the set of
states a gold path may take there. Regions overlap on purpose, so the CRF learns where exactly
n ends and h begins. With ``last`` the index of the last signal-peptide residue and ``centre`` the
middle (start + 4) of the most hydrophobic Kyte-Doolittle 7-residue window of the signal peptide:

- every type: mature residues labelled I/M/O get the type's own I/M/O state;
- SP (Sec/SPI): n = [0, centre), h = [2, last - 2) (at least [2, centre + 1)), c = [centre + 1, last],
  so the last three SP residues are c;
- LIPO (Sec/SPII): n = [0, centre), h = [2, last - 1), the last two SP residues are the
  lipobox cleavage state CS, and the first mature residue (the lipidated Cys) is C1 and nothing else;
- TAT (Tat/SPI): the last "RR" of the signal peptide (else the last "KR", else the residues
  around the last R) is the RR state, n before it and on the one residue after it,
  h = [RR + 3, last - 1), c = [centre + 1, last];
- TATLIPO (Tat/SPII): TAT's n/RR/h, then LIPO's CS and C1;
- PILIN (Sec/SPIII): the signal peptide is one state P, the five residues after the site are the
  conserved-motif state CS (besides their I/M/O state), and the annotated transmembrane stretch
  from the sixth residue on may be h.

One deviation, found by the feasibility test on the real file: SignalP 6.0 ends the pilin h-region
one residue *before* the last M, but the constrained CRF (PEFT-SP's transitions) cannot leave h
for M, so no allowed path fits those targets (68 of the 70 pilin records' losses would sit on the
forbidden-move penalty). Here the h-region includes the last M residue. Likewise the Tat motif is
searched only where it leaves room for an h-region (8 TAT records have a second RR 2-3 residues
before the site, which left them without an allowed path). With both, every record of
``train_set.fasta`` admits an allowed path. ``PILIN_H_INCLUDES_LAST_M = False`` restores SignalP's
pilin rule.

The constraints are PEFT-SP's ``model_config.py`` lists, with one correction: its allowed last
states (0, 1, 2, 13, 14, 15, 20, 21, 22, 28, 29, 30, 34, 35, 36) leave out SP_I, SP_M and SP_O
(6, 7, 8), so taken literally no Sec/SPI path could end. Here every type's I, M and O may end.

The CRF is a multi-tag linear-chain CRF: the loss is ``log Z - log(sum of the scores of every
allowed path inside the bitmap)``; transitions, first and last states are hard constraints
(PEFT-SP's ``--constrain_crf`` lists). A path never leaves the block of states of the type it
starts in, so P(type) is the block's marginal mass (PEFT-SP averages it over positions; the value
is the same at every position). The cleavage site is read from the region marginals as well: within
the chosen type, P(residue t is in the signal peptide | type) falls monotonically with t (the signal
peptide is a prefix of every path), and the site is the number of residues where it exceeds 1/2,
i.e. the posterior median of the signal-peptide length.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import numpy as np
import torch
from torch import nn

from seqpeft.data import SP_TYPES
from seqpeft.errors import SeqpeftInputError

# SignalP 6.0's SP_REGION_VOCAB order (PEFT-SP's 37 states).
_BLOCKS = {
    "NO_SP": ("I", "M", "O"),
    "SP": ("N", "H", "C", "I", "M", "O"),
    "LIPO": ("N", "H", "CS", "C1", "I", "M", "O"),
    "TAT": ("N", "RR", "H", "C", "I", "M", "O"),
    "TATLIPO": ("N", "RR", "H", "CS", "C1", "I", "M", "O"),
    "PILIN": ("P", "CS", "H", "I", "M", "O"),
}
REGION_STATES = tuple(f"{sp_type}_{region}" for sp_type in SP_TYPES for region in _BLOCKS[sp_type])
NUM_REGION_STATES = len(REGION_STATES)
STATE = {name: index for index, name in enumerate(REGION_STATES)}
# The block (SP_TYPES index) of every state.
STATE_TYPE = np.array([SP_TYPES.index(name.rsplit("_", 1)[0]) for name in REGION_STATES], dtype=np.int64)
# States inside the signal peptide (before the cleavage site), per type.
SIGNAL_STATES = {
    "SP": ("N", "H", "C"), "LIPO": ("N", "H", "CS"), "TAT": ("N", "RR", "H", "C"),
    "TATLIPO": ("N", "RR", "H", "CS"), "PILIN": ("P",),
}
IN_SIGNAL = np.zeros(NUM_REGION_STATES, dtype=bool)
for _type, _regions in SIGNAL_STATES.items():
    for _region in _regions:
        IN_SIGNAL[STATE[f"{_type}_{_region}"]] = True
# n, h and c states of the region regulariser (PEFT-SP's SIGNALP6_REGION_LABEL_MAP).
N_STATES = tuple(STATE[f"{t}_N"] for t in ("SP", "LIPO", "TAT", "TATLIPO"))
H_STATES = tuple(STATE[f"{t}_H"] for t in ("SP", "LIPO", "TAT", "TATLIPO", "PILIN"))
C_STATES = tuple(STATE[f"{t}_C"] for t in ("SP", "TAT"))
# Types whose n-h (resp. h-c) similarity is penalised: the others have no such pair of regions.
NH_TYPES = (SP_TYPES.index("SP"), SP_TYPES.index("LIPO"))
HC_TYPES = (SP_TYPES.index("SP"), SP_TYPES.index("TAT"))

PILIN_H_INCLUDES_LAST_M = True
KYTE_DOOLITTLE = {
    "I": 4.5, "V": 4.2, "L": 3.8, "F": 2.8, "C": 2.5, "M": 1.9, "A": 1.8, "G": -0.4, "T": -0.7, "S": -0.8,
    "W": -0.9, "Y": -1.3, "P": -1.6, "H": -3.2, "E": -3.5, "Q": -3.5, "D": -3.5, "N": -3.5, "K": -3.9, "R": -4.5,
}
AMINO_ACIDS = "ACDEFGHIKLMNPQRSTVWY"
SIGNAL_LETTER = {"SP": "S", "LIPO": "L", "TAT": "T", "TATLIPO": "T", "PILIN": "P"}
_FORBIDDEN = -1e4


def _moves(sp_type: str, chain: str) -> list[tuple[str, str]]:
    """'N>H>C>O' -> every state loops, and each moves to the next."""
    names = chain.split(">")
    return [(a, a) for a in names] + list(zip(names, names[1:]))


def allowed_moves() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(transitions [from, to], first states, last states) as boolean tensors: PEFT-SP's
    ``--constrain_crf`` lists for the region states."""
    return tuple(x.clone() for x in _allowed_moves())


@lru_cache(maxsize=1)
def _allowed_moves() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    mature = [("I", "M"), ("M", "I"), ("M", "O"), ("O", "M")]
    signal = {
        "SP": _moves("SP", "N>H>C>O"),
        "LIPO": _moves("LIPO", "N>H>CS>C1>O"),
        "TAT": _moves("TAT", "N>RR>N") + _moves("TAT", "N>H>C>O"),
        "TATLIPO": _moves("TATLIPO", "N>RR>N") + _moves("TATLIPO", "N>H>CS>C1>O"),
        "PILIN": _moves("PILIN", "P>CS>H>O"),
    }
    allowed = torch.zeros(NUM_REGION_STATES, NUM_REGION_STATES, dtype=torch.bool)
    for sp_type in SP_TYPES:
        for a, b in mature + [(x, x) for x in ("I", "M", "O")] + signal.get(sp_type, []):
            allowed[STATE[f"{sp_type}_{a}"], STATE[f"{sp_type}_{b}"]] = True
    # C1 is a single residue: drop its self-loop.
    for sp_type in ("LIPO", "TATLIPO"):
        allowed[STATE[f"{sp_type}_C1"], STATE[f"{sp_type}_C1"]] = False
    first = torch.zeros(NUM_REGION_STATES, dtype=torch.bool)
    for name in ("NO_SP_I", "NO_SP_O", "SP_N", "LIPO_N", "TAT_N", "TATLIPO_N", "PILIN_P"):
        first[STATE[name]] = True
    last = torch.zeros(NUM_REGION_STATES, dtype=torch.bool)
    for sp_type in SP_TYPES:
        for region in ("I", "M", "O"):
            last[STATE[f"{sp_type}_{region}"]] = True
    return allowed, first, last


# ---- label processing ----


def hydrophobic_centre(residues: str, window: int = 7) -> int:
    """Index of the middle residue (start + 4) of the most hydrophobic ``window`` (first maximum).

    As SignalP 6.0 does, window starts run over 0 .. len - window - 1 (the last full window is not
    scored), and a stretch no longer than the window is scored once from 0. Letters outside the
    Kyte-Doolittle table score 0.
    """
    starts = range(len(residues) - window) if len(residues) > window else range(1)
    best = max(starts, key=lambda s: sum(KYTE_DOOLITTLE.get(r, 0.0) for r in residues[s:s + window]))
    return best + (window + 1) // 2


def twin_arginine(residues: str) -> int:
    """Start of the Tat motif: the last 'RR', else the last 'KR', else the residue before the last R."""
    for motif in ("RR", "KR"):
        found = residues.rfind(motif)
        if found != -1:
            return found
    return max(residues.rfind("R") - 1, 0)


@lru_cache(maxsize=65536)
def _bitmap_cached(labels: str, sequence: str, sp_type: str) -> bytes:
    return np.packbits(_region_bitmap(labels, sequence, sp_type), axis=None).tobytes()


def region_bitmap(labels: str, sequence: str, sp_type: str) -> np.ndarray:
    """[len(labels), NUM_REGION_STATES] booleans: the states a gold path may take at each residue."""
    if sp_type not in SP_TYPES:
        raise SeqpeftInputError(None, f"unknown SP type {sp_type!r}.", fix=f"use one of {', '.join(SP_TYPES)}.")
    packed = np.frombuffer(_bitmap_cached(labels, sequence, sp_type), dtype=np.uint8)
    return np.unpackbits(packed, count=len(labels) * NUM_REGION_STATES).reshape(len(labels), NUM_REGION_STATES).astype(bool)


def _region_bitmap(labels: str, sequence: str, sp_type: str) -> np.ndarray:
    length = len(labels)
    bits = np.zeros((length, NUM_REGION_STATES), dtype=bool)
    for t, letter in enumerate(labels):
        if letter in "IMO":
            bits[t, STATE[f"{sp_type}_{letter}"]] = True
    if sp_type == "NO_SP":
        return _checked(bits, labels, sp_type)
    last = labels.rfind(SIGNAL_LETTER[sp_type])
    if last < 0:
        raise SeqpeftInputError(None, f"a {sp_type} record has no {SIGNAL_LETTER[sp_type]!r} residue in its labels {labels!r}.",
                                fix="check the record's type and labels.")

    def tag(region: str, start: int, stop: int) -> None:
        bits[max(start, 0):max(stop, 0), STATE[f"{sp_type}_{region}"]] = True

    def lipobox() -> None:
        tag("CS", last - 1, last + 1)
        if last + 1 < length:  # the +1 cysteine is C1 only
            bits[last + 1] = False
            bits[last + 1, STATE[f"{sp_type}_C1"]] = True

    centre = hydrophobic_centre(sequence[:last + 1])
    if sp_type == "SP":
        h_end = max(last - 2, centre + 1)
        tag("N", 0, centre)
        tag("H", 2, h_end)
        tag("C", centre + 1, last + 1)
    elif sp_type == "LIPO":
        tag("N", 0, centre)
        tag("H", 2, last - 1)
        lipobox()
    elif sp_type in ("TAT", "TATLIPO"):
        # The motif must leave room for an h-region (SignalP 6.0 takes the last RR of the whole signal
        # peptide; on the 8 records whose last RR sits 2-3 residues before the site no allowed path fits).
        rr = twin_arginine(sequence[:max(last - 3, 2)])
        tag("N", 0, rr)
        tag("RR", rr, rr + 2)
        tag("N", rr + 2, rr + 3)
        tag("H", rr + 3, last - 1)
        if sp_type == "TAT":
            tag("C", centre + 1, last + 1)
        else:
            lipobox()
    elif sp_type == "PILIN":
        tag("P", 0, last + 1)
        tag("CS", last + 1, last + 6)
        membrane = [t for t, letter in enumerate(labels) if letter == "M"]
        if membrane:
            tag("H", last + 6, membrane[-1] + (1 if PILIN_H_INCLUDES_LAST_M else 0))
    return _checked(bits, labels, sp_type)


def _checked(bits: np.ndarray, labels: str, sp_type: str) -> np.ndarray:
    empty = np.flatnonzero(~bits.any(axis=1))
    if empty.size:
        raise SeqpeftInputError(None, f"region labelling of a {sp_type} record leaves residue {int(empty[0])} without a state "
                                f"(labels {labels!r}).", fix="check the record's type and labels.")
    return bits


def bitmap_admits_a_path(bits: np.ndarray) -> bool:
    """Whether some path allowed by the CRF constraints stays inside ``bits`` at every residue."""
    allowed, first, last = (x.numpy() for x in _allowed_moves())
    reach = first & bits[0]
    for t in range(1, len(bits)):
        reach = allowed[reach].any(axis=0) & bits[t]
    return bool((reach & last).any())


# ---- the CRF ----


class RegionCRF(nn.Module):
    """Linear-chain CRF over the 37 region states with hard constraints and multi-tag targets."""

    def __init__(self):
        super().__init__()
        self.start = nn.Parameter(torch.zeros(NUM_REGION_STATES))
        self.transitions = nn.Parameter(torch.zeros(NUM_REGION_STATES, NUM_REGION_STATES))
        self.end = nn.Parameter(torch.zeros(NUM_REGION_STATES))
        allowed, first, last = allowed_moves()
        self.register_buffer("allowed", allowed, persistent=False)
        self.register_buffer("first_allowed", first, persistent=False)
        self.register_buffer("last_allowed", last, persistent=False)

    def scores(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(start, transitions, end) with forbidden entries at a large negative score."""
        return (self.start.masked_fill(~self.first_allowed, _FORBIDDEN),
                self.transitions.masked_fill(~self.allowed, _FORBIDDEN),
                self.end.masked_fill(~self.last_allowed, _FORBIDDEN))

    def _alphas(self, emissions: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        start, transitions, _ = self.scores()
        alpha = start + emissions[:, 0]
        alphas = [alpha]
        for t in range(1, emissions.shape[1]):
            step = torch.logsumexp(alpha.unsqueeze(2) + transitions, dim=1) + emissions[:, t]
            alpha = torch.where(mask[:, t:t + 1], step, alpha)
            alphas.append(alpha)
        return torch.stack(alphas, dim=1)

    def _betas(self, emissions: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        _, transitions, end = self.scores()
        beta = end.expand(emissions.shape[0], NUM_REGION_STATES)
        betas = [beta]
        for t in range(emissions.shape[1] - 2, -1, -1):
            step = torch.logsumexp(transitions + (emissions[:, t + 1] + beta).unsqueeze(1), dim=2)
            beta = torch.where(mask[:, t + 1:t + 2], step, beta)
            betas.append(beta)
        return torch.stack(betas[::-1], dim=1)

    def log_partition(self, emissions: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        alpha = self._alphas(emissions, mask)
        last = mask.sum(dim=1) - 1
        final = alpha[torch.arange(emissions.shape[0], device=emissions.device), last]
        return torch.logsumexp(final + self.scores()[2], dim=1)

    def _final(self, alpha: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        last = mask.sum(dim=1) - 1
        return torch.logsumexp(alpha[torch.arange(alpha.shape[0], device=alpha.device), last] + self.scores()[2], dim=1)

    def nll_and_marginals(self, emissions: torch.Tensor, bitmap: torch.Tensor, mask: torch.Tensor,
                          marginals: bool = True) -> tuple[torch.Tensor, torch.Tensor | None]:
        """(-log P(path inside ``bitmap`` [batch, length, states]) per sequence, marginals or None).

        One forward pass over the free and the bitmap-restricted emissions together (and one
        backward pass for the marginals): half the sequential steps of separate calls.
        """
        batch = emissions.shape[0]
        both = torch.cat([emissions, emissions.masked_fill(~bitmap, _FORBIDDEN)])
        alpha = self._alphas(both, torch.cat([mask, mask]))
        log_z = self._final(alpha[:batch], mask)
        nll = log_z - self._final(alpha[batch:], mask)
        if not marginals:
            return nll, None
        beta = self._betas(emissions, mask)
        return nll, torch.exp(alpha[:batch] + beta - log_z[:, None, None]) * mask.unsqueeze(2)

    def nll(self, emissions: torch.Tensor, bitmap: torch.Tensor, mask: torch.Tensor, reduction: str = "sum") -> torch.Tensor:
        """-log P(path inside ``bitmap`` [batch, length, states]), summed or per sequence (``"none"``)."""
        per_sequence = self.nll_and_marginals(emissions, bitmap, mask, marginals=False)[0]
        return per_sequence if reduction == "none" else per_sequence.sum()

    def marginals(self, emissions: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        alpha = self._alphas(emissions, mask)
        beta = self._betas(emissions, mask)
        log_z = self._final(alpha, mask)
        return torch.exp(alpha + beta - log_z[:, None, None]) * mask.unsqueeze(2)


def _group(marginals: torch.Tensor, states) -> torch.Tensor:
    return marginals[..., list(states)].sum(dim=-1)


def type_probabilities(marginals: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """[batch, len(SP_TYPES)]: each type's states' marginal mass averaged over residues (PEFT-SP)."""
    blocks = torch.stack([_group(marginals, np.flatnonzero(STATE_TYPE == k)) for k in range(len(SP_TYPES))], dim=-1)
    return (blocks * mask.unsqueeze(2)).sum(dim=1) / mask.sum(dim=1, keepdim=True)


def decode_marginals(marginals: torch.Tensor, mask: torch.Tensor) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(type index, cleavage site, type probabilities) per sequence, all from the marginals.

    The site is -1 for NO_SP; otherwise the number of residues whose probability of lying in the
    chosen type's signal peptide, given that type, exceeds 1/2.
    """
    probabilities = type_probabilities(marginals, mask)
    types = probabilities.argmax(dim=1)
    sites = []
    for b, chosen in enumerate(types.tolist()):
        if chosen == 0:
            sites.append(-1)
            continue
        block = torch.as_tensor(STATE_TYPE == chosen, device=marginals.device)
        signal = torch.as_tensor(IN_SIGNAL & (STATE_TYPE == chosen), device=marginals.device)
        within = marginals[b][:, signal].sum(dim=1) / marginals[b][:, block].sum(dim=1).clamp(min=1e-30)
        sites.append(int(((within > 0.5) & mask[b]).sum()))
    return types.cpu().numpy(), np.array(sites, dtype=np.int64), probabilities.detach().cpu().numpy()


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
    """A signal-peptide task's ``signal_peptide:`` block (defaults as in the config schema)."""

    labels: str = "types"
    region_regularization_alpha: float = 0.5

    @classmethod
    def from_task(cls, task_spec: dict | None) -> "SignalPeptideSettings":
        values = dict((task_spec or {}).get("signal_peptide") or {})
        unknown = sorted(set(values) - {"labels", "region_regularization_alpha"})
        if unknown:
            raise SeqpeftInputError(f"signal_peptide.{unknown[0]}", "unknown key.",
                                    fix="use labels and region_regularization_alpha.")
        settings = cls(**values)
        if settings.labels not in ("types", "regions"):
            raise SeqpeftInputError("signal_peptide.labels", f"{settings.labels!r} is not a label scheme.",
                                    fix="use types (8 states) or regions (SignalP 6.0's 37 region states).")
        if not float(settings.region_regularization_alpha) >= 0:
            raise SeqpeftInputError("signal_peptide.region_regularization_alpha", "must be >= 0.", fix="e.g. 0.5 (PEFT-SP).")
        return settings


# ---- the training objective of ``labels: regions`` ----


def _bitmaps(split, indices, length: int, device) -> torch.Tensor:
    from seqpeft.data import RESIDUE_LABELS

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
        from seqpeft.signalp_crf import residue_emissions

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
    from seqpeft.signalp_crf import residue_emissions
    from seqpeft.train import collate

    model.eval()
    order = np.argsort(-split.data.lengths, kind="stable")
    types, sites, probabilities, nll = [], [], [], []
    labelled = "sp_type" in split.extra
    with torch.inference_mode():
        for start in range(0, len(order), batch_size):
            indices = order[start:start + batch_size]
            input_ids, attention, _ = collate(split, indices, pad_id, max_length, torch)
            attention = attention.to(device)
            logits = model(input_ids.to(device), attention).float()
            emissions, mask = residue_emissions(logits, attention, split.leading_specials)
            if labelled:
                bitmap = _bitmaps(split, indices, emissions.shape[1], emissions.device)
                batch_nll, marginals = model.crf.nll_and_marginals(emissions, bitmap, mask)
                nll.append(batch_nll.cpu().numpy())
            else:
                marginals = model.crf.marginals(emissions, mask)
            batch = decode_marginals(marginals, mask)
            types.append(batch[0])
            sites.append(batch[1])
            probabilities.append(batch[2])
    inverse = np.empty_like(order)
    inverse[order] = np.arange(len(order))
    predicted = {"type": np.concatenate(types)[inverse], "site": np.concatenate(sites)[inverse],
                 "probabilities": np.concatenate(probabilities)[inverse]}
    if labelled:
        predicted["nll"] = np.concatenate(nll)[inverse]
    return predicted


def _attach(model) -> None:
    model.crf = RegionCRF()


def region_objective(settings: SignalPeptideSettings):
    """The ``signal_peptide`` objective with region labels (same scoring as ``types``)."""
    from seqpeft.objectives import OBJECTIVES, Objective

    types = OBJECTIVES["signal_peptide"]
    return Objective("signal_peptide", num_outputs=lambda n: NUM_REGION_STATES, attach=_attach,
                     loss=region_loss(float(settings.region_regularization_alpha)), normaliser=types.normaliser,
                     predict=region_predict, score=types.score)
