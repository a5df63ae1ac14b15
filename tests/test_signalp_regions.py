"""Region labels (SignalP 6.0's 37 states): label processing on hand-worked real records, the
multi-tag constrained CRF against brute-force enumeration, the regulariser and the decoding."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from helpers import shared_path
from seqpeft.data.readers import SP_TYPES
from seqpeft.data.signalp import read_signalp_fasta
from seqpeft.util.errors import SeqpeftInputError
from seqpeft.tasks.signal_peptide.region_labels import (
    NUM_REGION_STATES, REGION_STATES, STATE, allowed_moves, bitmap_admits_a_path, hydrophobic_centre, region_bitmap,
    twin_arginine,
)
from seqpeft.tasks.signal_peptide.region_labels import peft_sp_last_states
from seqpeft.tasks.signal_peptide.regions import (SITE_STATES, SOFT_PENALTY, RegionCRF, SignalPeptideSettings, decode_viterbi,
                                                  one_hot_residues, region_similarity, type_probabilities)

TRAIN_SET = "data/signalp/train_set.fasta"  # under ../shared: shared_path fails under CI when it is missing


@pytest.fixture(scope="module")
def records():
    return {r.accession: r for r in read_signalp_fasta(shared_path(TRAIN_SET))}


def _regions(bits: np.ndarray) -> list[str]:
    """Per residue, the allowed states' region names (type prefix dropped), in state order."""
    return ["/".join(REGION_STATES[s].split("_")[-1] if not REGION_STATES[s].endswith(("_CS", "_C1", "_RR"))
                     else REGION_STATES[s].rsplit("_", 1)[1] for s in np.flatnonzero(row)) for row in bits]


def _runs(*runs: tuple[int, str]) -> list[str]:
    return [name for count, name in runs for _ in range(count)]


# Worked by hand from the rules in the module docstring; the Kyte-Doolittle window sums that decide
# each centre are in the comments (window start s covers residues s..s+6; centre = s + 4).
HAND_WORKED = {
    # EUKARYA Sec/SPI: SP = MKAVITLLFLACILVVTYG (last = 18). Best window s=9 "LACILVV" 24.8
    # (s=8 23.4, s=10 20.3) -> centre 13: n [0,13), h [2,16), c [14,19).
    "B0JFB8": ("SP", _runs((2, "N"), (11, "N/H"), (1, "H"), (2, "H/C"), (3, "C"), (51, "O"))),
    # EUKARYA, no signal peptide: all I.
    "Q8TF40": ("NO_SP", _runs((70, "I"))),
    # ARCHAEA Sec/SPII (PEFT-SP's README example): SP = MRRATYAFALLAILVLGVVASG (last = 21). Best window
    # s=9 "LLAILVL" 25.7 (s=12 24.3, s=8 23.7) -> centre 13: n [0,13), h [2,20), CS 20-21, C1 = the Cys at 22.
    "P58300": ("LIPO", _runs((2, "N"), (11, "N/H"), (7, "H"), (2, "CS"), (1, "C1"), (47, "O"))),
    # NEGATIVE Tat/SPI: SP = MSEQFTRREFLQSACITMGALAVSTSGVDRAFA (last = 32); last RR at 6-7, n after it at 8,
    # h [9,31). Best window s=14 "CITMGAL" 13.4 (s=15 12.7, s=13 11.4) -> centre 18, c [19,33).
    "Q7M827": ("TAT", _runs((6, "N"), (2, "RR"), (1, "N"), (10, "H"), (12, "H/C"), (2, "C"), (37, "O"))),
    # POSITIVE Tat/SPII: SP = MMSRESQPGLHRQLSRRNMLAAMGLAGAAAVSLPVLSA (last = 37); last RR at 15-16, n at 17,
    # h [18,36), CS 36-37, C1 = the Cys at 38.
    "A0QXD9": ("TATLIPO", _runs((15, "N"), (2, "RR"), (1, "N"), (18, "H"), (2, "CS"), (1, "C1"), (31, "O"))),
    # NEGATIVE Sec/SPIII: P x7 (last = 6), O at 7, M 8-27. Motif CS at 7-11 (with their O/M), h from 12
    # through the last M (27), then O.
    "P02974": ("PILIN", _runs((7, "P"), (1, "CS/O"), (4, "CS/M"), (16, "H/M"), (42, "O"))),
}


@pytest.mark.parametrize("accession", sorted(HAND_WORKED))
def test_region_labels_of_hand_worked_records(records, accession):
    sp_type, expected = HAND_WORKED[accession]
    record = records[accession]
    assert record.sp_type == sp_type
    bits = region_bitmap(record.labels, record.sequence, record.sp_type)
    assert _regions(bits) == expected
    # every state used belongs to the record's own type
    used = {REGION_STATES[s] for s in np.flatnonzero(bits.any(axis=0))}
    assert all(name.startswith(sp_type + "_") and not name.startswith(sp_type + "_" + sp_type) for name in used)


def test_hand_worked_records_cover_every_type_and_kingdom(records):
    assert {v[0] for v in HAND_WORKED.values()} == set(SP_TYPES)
    assert {records[a].kingdom for a in HAND_WORKED} == {"EUKARYA", "ARCHAEA", "NEGATIVE", "POSITIVE"}


def test_window_and_motif_rules():
    assert hydrophobic_centre("KKKKKKKKLLLLLLLKKKK") == 8 + 4  # the all-L window starts at 8
    assert hydrophobic_centre("LLL") == 4  # shorter than the window: scored once from 0
    assert twin_arginine("MSRRTFLKRAA") == 2  # RR wins over a later KR
    assert twin_arginine("MSKRTFLA") == 2
    assert twin_arginine("MSTFRLA") == 3  # no motif: the residue before the last R


def test_every_real_record_admits_an_allowed_path(records):
    """The targets never contradict the hard constraints (see the module docstring's deviations)."""
    bad = [a for a, r in records.items() if not bitmap_admits_a_path(region_bitmap(r.labels, r.sequence, r.sp_type))]
    assert bad == []


def test_signalp_literal_pilin_rule_admits_no_path(records, monkeypatch):
    """Why the deviation: with h ending before the last M, a pilin record has no allowed path."""
    import seqpeft.tasks.signal_peptide.region_labels as regions

    monkeypatch.setattr(regions, "PILIN_H_INCLUDES_LAST_M", False)
    regions._bitmap_cached.cache_clear()
    try:
        record = records["P02974"]
        assert not bitmap_admits_a_path(region_bitmap(record.labels, record.sequence, "PILIN"))
    finally:
        regions._bitmap_cached.cache_clear()


def test_constraints_are_peft_sp_s_with_sec_spi_ends():
    allowed, first, last = allowed_moves()
    peft_sp_starts = [0, 2, 3, 9, 16, 23, 31]
    peft_sp_ends = [0, 1, 2, 13, 14, 15, 20, 21, 22, 28, 29, 30, 34, 35, 36]
    assert np.flatnonzero(first.numpy()).tolist() == peft_sp_starts
    assert np.flatnonzero(last.numpy()).tolist() == sorted(peft_sp_ends + [6, 7, 8])  # + SP_I, SP_M, SP_O
    assert int(allowed.sum()) == 7 + 13 + 14 + 16 + 17 + 13  # PEFT-SP's list, block by block
    assert bool(allowed[STATE["SP_C"], STATE["SP_O"]]) and not bool(allowed[STATE["SP_C"], STATE["SP_I"]])
    assert not bool(allowed[STATE["LIPO_C1"], STATE["LIPO_C1"]]) and bool(allowed[STATE["TAT_RR"], STATE["TAT_N"]])


def _allowed_paths(length: int):
    allowed, first, last = allowed_moves()
    paths = [[s] for s in np.flatnonzero(first.numpy())]
    for _ in range(length - 1):
        paths = [p + [int(n)] for p in paths for n in np.flatnonzero(allowed[p[-1]].numpy())]
    return [p for p in paths if bool(last[p[-1]])]


def _random_crf(seed: int) -> RegionCRF:
    torch.manual_seed(seed)
    crf = RegionCRF().double()
    with torch.no_grad():
        for p in crf.parameters():
            p.normal_()
    return crf


@pytest.mark.parametrize("lengths", [(6, 4), (5, 1), (3, 2)])
def test_partition_marginals_and_multitag_nll_match_enumeration(lengths):
    crf = _random_crf(sum(lengths))
    width = max(lengths)
    emissions = torch.randn(len(lengths), width, NUM_REGION_STATES, dtype=torch.float64)
    mask = torch.arange(width).unsqueeze(0) < torch.tensor(lengths).unsqueeze(1)
    generator = torch.Generator().manual_seed(1)
    bitmap = torch.rand(len(lengths), width, NUM_REGION_STATES, generator=generator) < 0.6
    start, transitions, end = crf.scores()
    nll = crf.nll(emissions, bitmap, mask, reduction="none")
    marginals = crf.marginals(emissions, mask)
    shared_nll, shared_marginals = crf.nll_and_marginals(emissions, bitmap, mask)  # the training path
    assert torch.allclose(shared_nll, nll) and torch.allclose(shared_marginals, marginals)
    for b, length in enumerate(lengths):
        paths = _allowed_paths(length)
        scores = torch.stack([start[p[0]] + end[p[-1]] + sum(emissions[b, t, p[t]] for t in range(length))
                              + sum(transitions[p[t], p[t + 1]] for t in range(length - 1)) for p in paths])
        log_z = torch.logsumexp(scores, 0)
        assert float(crf.log_partition(emissions, mask)[b].detach()) == pytest.approx(float(log_z), abs=1e-6)
        weights = torch.exp(scores - log_z)
        expected = torch.zeros(width, NUM_REGION_STATES, dtype=torch.float64)
        for p, w in zip(paths, weights):
            for t, s in enumerate(p):
                expected[t, s] += w
        assert torch.allclose(marginals[b].detach(), expected, atol=1e-6)
        inside = [i for i, p in enumerate(paths) if all(bool(bitmap[b, t, s]) for t, s in enumerate(p))]
        if inside:
            expected_nll = float(log_z - torch.logsumexp(scores[inside], 0))
            assert float(nll[b]) == pytest.approx(expected_nll, abs=1e-6)
        else:
            assert float(nll[b]) > 1e3  # no allowed path fits: the forbidden-move penalty


def test_forbidden_moves_carry_no_mass():
    crf = _random_crf(3)
    emissions = torch.randn(4, 7, NUM_REGION_STATES, dtype=torch.float64) * 3
    mask = torch.ones(4, 7, dtype=torch.bool)
    marginals = crf.marginals(emissions, mask)
    _, first, last = allowed_moves()
    assert float(marginals[:, 0, ~first].sum()) < 1e-12
    assert float(marginals[:, -1, ~last].sum()) < 1e-12
    assert torch.allclose(marginals.sum(dim=2), torch.ones(4, 7, dtype=torch.float64))


def _path_emissions(path: list[str], strength: float = 20.0) -> torch.Tensor:
    emissions = torch.full((1, len(path), NUM_REGION_STATES), -strength)
    for t, name in enumerate(path):
        emissions[0, t, STATE[name]] = strength
    return emissions


def _site_by_rule(path) -> int:
    """PEFT-SP's rule, written out: 1 + the last residue tagged SP_C / LIPO_CS / TAT_C / TATLIPO_CS / PILIN_P."""
    names = [REGION_STATES[s] for s in path]
    ends = [t for t, name in enumerate(names) if name in ("SP_C", "LIPO_CS", "TAT_C", "TATLIPO_CS", "PILIN_P")]
    return ends[-1] + 1 if ends else -1


def _path_scores(crf, emissions_b, paths) -> torch.Tensor:
    start, transitions, end = crf.scores()
    index = torch.as_tensor(paths)
    steps = torch.arange(index.shape[1])
    return (start[index[:, 0]] + end[index[:, -1]] + emissions_b[steps, index].sum(dim=1)
            + transitions[index[:, :-1], index[:, 1:]].sum(dim=1))


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_viterbi_site_is_the_best_allowed_path_s_by_enumeration(seed):
    crf = _random_crf(seed)
    lengths = (6, 5, 4, 3, 1)
    emissions = torch.randn(len(lengths), max(lengths), NUM_REGION_STATES, dtype=torch.float64,
                            generator=torch.Generator().manual_seed(seed)) * 2
    mask = torch.arange(max(lengths)).unsqueeze(0) < torch.tensor(lengths).unsqueeze(1)
    marginals = crf.marginals(emissions, mask)
    types, sites, probabilities = decode_viterbi(crf, emissions, marginals, mask)
    assert np.array_equal(types, type_probabilities(marginals, mask).argmax(dim=1).numpy())
    for b, length in enumerate(lengths):
        paths = _allowed_paths(length)
        best = paths[int(_path_scores(crf, emissions[b, :length], paths).argmax())]
        assert crf.viterbi(emissions, mask)[b] == best
        assert sites[b] == _site_by_rule(best)


def test_viterbi_under_soft_constraints_is_the_best_of_all_paths():
    torch.manual_seed(4)
    crf = RegionCRF("soft", init="peft_sp").double()
    emissions = torch.randn(2, 3, NUM_REGION_STATES, dtype=torch.float64) * 8
    mask = torch.ones(2, 3, dtype=torch.bool)
    every = torch.cartesian_prod(*[torch.arange(NUM_REGION_STATES)] * 3).tolist()  # forbidden ones too
    for b in range(2):
        scores = _path_scores(crf, emissions[b], every)
        assert crf.viterbi(emissions, mask)[b] == every[int(scores.argmax())]


def test_soft_constraints_are_peft_sp_s_penalty_and_last_states():
    crf = RegionCRF("soft", init="peft_sp")
    start, transitions, end = crf.scores()
    allowed, first, _ = allowed_moves()
    assert torch.all(transitions[~allowed] == SOFT_PENALTY) and torch.all(start[~first] == SOFT_PENALTY)
    assert torch.all(end[~peft_sp_last_states()] == SOFT_PENALTY) and float(end[STATE["SP_O"]]) == SOFT_PENALTY
    assert float(transitions[allowed].abs().max()) <= 0.577 and float(transitions[allowed].std()) > 0.1  # uniform(+-0.577)
    assert float(RegionCRF().scores()[1][~allowed].max()) < -1e3  # hard: never
    # a forbidden move is taken under soft constraints when the emissions outweigh -20, never under hard ones
    path = ["NO_SP_I", "SP_N", "SP_H"]
    emissions = _path_emissions(path, strength=30.0)
    mask = torch.ones(1, 3, dtype=torch.bool)
    assert [REGION_STATES[s] for s in crf.viterbi(emissions, mask)[0]] == path
    assert [REGION_STATES[s] for s in RegionCRF().viterbi(emissions, mask)[0]] != path


def test_type_from_marginals_and_site_from_the_viterbi_path():
    crf = RegionCRF()
    lipo = ["LIPO_N"] * 3 + ["LIPO_H"] * 6 + ["LIPO_CS"] * 2 + ["LIPO_C1"] + ["LIPO_O"] * 4
    emissions = _path_emissions(lipo)
    mask = torch.ones(1, len(lipo), dtype=torch.bool)
    types, sites, probabilities = decode_viterbi(crf, emissions, crf.marginals(emissions, mask), mask)
    assert SP_TYPES[types[0]] == "LIPO" and sites[0] == 11  # first mature residue: the Cys
    assert probabilities[0].sum() == pytest.approx(1.0, abs=1e-5) and probabilities[0, 2] > 0.99
    mature = _path_emissions(["NO_SP_I"] * 5 + ["NO_SP_M"] * 3 + ["NO_SP_O"] * 4)
    mask = torch.ones(1, 12, dtype=torch.bool)
    types, sites, _ = decode_viterbi(crf, mature, crf.marginals(mature, mask), mask)
    assert (types[0], sites[0]) == (0, -1)
    assert len(SITE_STATES) == 5


def test_viterbi_site_does_not_follow_the_predicted_type():
    # Many NO_SP paths share the mass, one SP path is the single best: the marginals pick NO_SP, the
    # Viterbi path keeps its SP site (PEFT-SP; the metrics' masking decides whether it counts).
    crf = RegionCRF()
    sp = ["SP_N", "SP_H", "SP_C", "SP_O", "SP_O", "SP_O"]
    emissions = _path_emissions(sp, strength=1.0)
    for t in range(6):
        for name in ("NO_SP_I", "NO_SP_M", "NO_SP_O"):
            emissions[0, t, STATE[name]] = 0.9
    mask = torch.ones(1, 6, dtype=torch.bool)
    types, sites, _ = decode_viterbi(crf, emissions, crf.marginals(emissions, mask), mask)
    assert types[0] == 0 and sites[0] == 3


def test_regulariser_measures_composition_similarity():
    # n = KK, h = LL, c = AA: disjoint compositions -> 0; n = LL, h = LL -> 1 (SP record)
    mask = torch.ones(1, 6, dtype=torch.bool)
    path = ["SP_N"] * 2 + ["SP_H"] * 2 + ["SP_C"] * 2
    marginals = torch.zeros(1, 6, NUM_REGION_STATES)
    for t, name in enumerate(path):
        marginals[0, t, STATE[name]] = 1.0
    sp = torch.tensor([SP_TYPES.index("SP")])
    n_h, h_c = region_similarity(marginals, mask, one_hot_residues(["KKLLAA"], 6), sp)
    assert float(n_h) == pytest.approx(0.0, abs=1e-6) and float(h_c) == pytest.approx(0.0, abs=1e-6)
    n_h, h_c = region_similarity(marginals, mask, one_hot_residues(["LLLLAA"], 6), sp)
    assert float(n_h) == pytest.approx(1.0, abs=1e-6) and float(h_c) == pytest.approx(0.0, abs=1e-6)
    # the same marginals on a TAT record: n-h is not penalised, a NO_SP record: neither
    for sp_type, expect_nh in (("TAT", 0.0), ("NO_SP", 0.0)):
        n_h, h_c = region_similarity(marginals, mask, one_hot_residues(["LLLLAA"], 6), torch.tensor([SP_TYPES.index(sp_type)]))
        assert float(n_h) == expect_nh


def test_regulariser_gradients_are_finite_on_empty_regions():
    crf = _random_crf(7).float()
    emissions = torch.randn(3, 9, NUM_REGION_STATES, requires_grad=True)
    mask = torch.ones(3, 9, dtype=torch.bool)
    n_h, h_c = region_similarity(crf.marginals(emissions, mask), mask, one_hot_residues(["MKLLAVVAG"] * 3, 9),
                                 torch.tensor([0, 2, 5]))
    (n_h.sum() + h_c.sum() + crf.nll(emissions, torch.ones_like(emissions, dtype=torch.bool), mask)).backward()
    assert torch.isfinite(emissions.grad).all()


def test_settings_are_checked():
    assert SignalPeptideSettings.from_task({}).labels == "types"
    assert SignalPeptideSettings.from_task({"signal_peptide": {"labels": "regions"}}).region_regularization_alpha == 0.5
    with pytest.raises(SeqpeftInputError, match="signal_peptide.labels"):
        SignalPeptideSettings.from_task({"signal_peptide": {"labels": "states"}})
    assert SignalPeptideSettings.from_task({"signal_peptide": {"labels": "regions"}}).constraints == "hard"
    with pytest.raises(SeqpeftInputError, match="signal_peptide.constraints"):
        SignalPeptideSettings.from_task({"signal_peptide": {"labels": "regions", "constraints": "loose"}})
    with pytest.raises(SeqpeftInputError, match="setting of the region CRF"):
        SignalPeptideSettings.from_task({"signal_peptide": {"constraints": "soft"}})
    assert not math.isnan(SignalPeptideSettings.from_task({"signal_peptide": {"region_regularization_alpha": 0}}).region_regularization_alpha)


def test_a_method_variant_s_signal_peptide_block_reaches_the_objective_and_a_reload():
    from types import SimpleNamespace

    from helpers import finetune_job
    from seqpeft.config.settings import FinetuneJob
    from seqpeft.tasks import objective_for

    task = {"kind": "signal_peptide", "signal_peptide": {"labels": "regions", "region_regularization_alpha": 0.5}}
    job = finetune_job("c.npz", "m", "o", kind="signal_peptide", task_spec=task,
                       method_spec={"method": "lora", "signal_peptide": {"constraints": "soft"}})
    assert job.task_spec["signal_peptide"] == {"labels": "regions", "region_regularization_alpha": 0.5, "constraints": "soft"}
    assert FinetuneJob.from_dict(job.to_dict()).task_spec == job.task_spec  # worker processes see the same
    assert task["signal_peptide"] == {"labels": "regions", "region_regularization_alpha": 0.5}  # the config is untouched
    model = SimpleNamespace()
    objective_for("signal_peptide", job.task_spec).attach(model)  # as artifacts.load does with seqpeft.json
    assert isinstance(model.crf, RegionCRF) and model.crf.forbidden == SOFT_PENALTY
    objective_for("signal_peptide", task).attach(model)
    assert model.crf.forbidden < -1e3 and float(model.crf.transitions.abs().sum()) == 0  # hard, zeros
