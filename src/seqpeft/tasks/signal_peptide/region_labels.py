"""SignalP 6.0 / PEFT-SP region states and label processing: 37 CRF states with n-, h- and c-regions
per SP type, PEFT-SP's hard transition constraints, and the bitmap of states a gold path may take
at each residue (``seqpeft.tasks.signal_peptide.regions`` is the CRF over them).

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
(6, 7, 8), so taken literally no Sec/SPI path could end. Here every type's I, M and O may end;
the soft constraints (``signal_peptide.constraints: soft``) keep PEFT-SP's literal list
(``peft_sp_last_states``), under which a Sec/SPI path ends at the -20 penalty, as in its code.
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np
import torch

from seqpeft.data.readers import SP_TYPES
from seqpeft.util.errors import SeqpeftInputError

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
FORBIDDEN_SCORE = -1e4


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


def peft_sp_last_states() -> torch.Tensor:
    """PEFT-SP's allowed last states taken literally (0, 1, 2, 13, 14, 15, 20, 21, 22, 28, 29, 30,
    34, 35, 36: every type's I, M, O but Sec/SPI's), for its soft constraints, under which a
    Sec/SPI path may end but pays the penalty at its last state."""
    last = _allowed_moves()[2].clone()
    for region in ("I", "M", "O"):
        last[STATE[f"SP_{region}"]] = False
    return last


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
