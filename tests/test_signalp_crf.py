"""The constrained CRF: exact against brute-force enumeration on tiny inputs, and its constraints."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch

from seqpeft.tasks.signal_peptide.crf import NUM_STATES, STATES, SignalPeptideCRF, allowed_transitions, decode, gold_states, site_of


def _allowed_path(path) -> bool:
    allowed = allowed_transitions()
    return all(bool(allowed[a, b]) for a, b in zip(path, path[1:]))


def _random_crf(seed: int) -> SignalPeptideCRF:
    torch.manual_seed(seed)
    crf = SignalPeptideCRF()
    with torch.no_grad():
        for p in crf.parameters():
            p.normal_()
    return crf


def test_partition_and_marginals_match_enumeration():
    crf = _random_crf(0)
    emissions = torch.randn(2, 4, NUM_STATES, dtype=torch.float64)
    crf = crf.double()
    mask = torch.tensor([[1, 1, 1, 1], [1, 1, 1, 0]], dtype=torch.bool)
    transitions = crf._transitions()
    for b, length in enumerate((4, 3)):
        scores, first_state = [], []
        for path in itertools.product(range(NUM_STATES), repeat=length):
            if not _allowed_path(path):
                continue
            s = crf.start[path[0]] + crf.end[path[-1]] + sum(emissions[b, t, path[t]] for t in range(length))
            s = s + sum(transitions[path[t], path[t + 1]] for t in range(length - 1))
            scores.append(s)
            first_state.append(path[0])
        scores = torch.stack(scores)
        log_z = torch.logsumexp(scores, 0)
        assert float(crf.log_partition(emissions, mask)[b].detach()) == pytest.approx(float(log_z), abs=1e-9)
        weights = torch.exp(scores - log_z)
        expected_first = torch.zeros(NUM_STATES, dtype=torch.float64).index_add_(0, torch.tensor(first_state), weights)
        assert torch.allclose(crf.marginals(emissions, mask)[b, 0], expected_first, atol=1e-9)


def test_type_probabilities_sum_to_one():
    crf = _random_crf(1)
    emissions = torch.randn(5, 9, NUM_STATES)
    mask = torch.arange(9).unsqueeze(0) < torch.tensor([9, 5, 1, 7, 3]).unsqueeze(1)
    probabilities = crf.type_probabilities(emissions, mask)
    assert probabilities.shape == (5, 6)
    assert torch.allclose(probabilities.sum(dim=1), torch.ones(5), atol=1e-5)
    assert bool((probabilities >= 0).all())


def test_unconstrained_s_o_s_decodes_to_one_contiguous_region():
    crf = SignalPeptideCRF()
    sp, o = STATES.index("SP_SP"), STATES.index("O")
    emissions = torch.full((1, 6, NUM_STATES), -5.0)
    # per-residue argmax would read S S O S O O: an SP piece after a mature residue
    for t, state in enumerate([sp, sp, o, sp, o, o]):
        emissions[0, t, state] = 5.0
    mask = torch.ones(1, 6, dtype=torch.bool)
    path = crf.viterbi(emissions, mask)[0]
    assert _allowed_path(path)
    regions = [state >= 3 for state in path]
    assert regions == sorted(regions, reverse=True)  # SP states only as a prefix
    types, sites, _ = decode(crf, emissions, mask)
    assert types[0] == 1 and sites[0] == site_of(path) and sites[0] in (2, 4)


def test_sites_are_minus_one_exactly_for_no_sp():
    crf = _random_crf(2)
    emissions = torch.randn(40, 12, NUM_STATES) * 3
    mask = torch.ones(40, 12, dtype=torch.bool)
    types, sites, _ = decode(crf, emissions, mask)
    assert set(types.tolist()) - {0} and 0 in types  # both cases occur
    assert np.array_equal(sites == -1, types == 0)


def test_gold_states_use_the_header_type():
    # "TTOO" labelled T in both TAT (type 3) and TATLIPO (type 4) records: different states
    labels = np.array([4, 4, 1, 1, -100])  # RESIDUE_LABELS = "IOMSTLP": 4 = T, 1 = O
    assert [STATES[s] for s in gold_states(labels, 3)[:4]] == ["SP_TAT", "SP_TAT", "O", "O"]
    assert [STATES[s] for s in gold_states(labels, 4)[:4]] == ["SP_TATLIPO", "SP_TATLIPO", "O", "O"]
    assert gold_states(labels, 3)[4] == -100


def test_nll_is_positive_and_trainable():
    crf = SignalPeptideCRF()
    emissions = torch.randn(3, 5, NUM_STATES, requires_grad=True)
    states = torch.tensor([[3, 3, 1, 1, 1], [0, 0, 0, 0, 0], [5, 1, 2, 0, 0]])
    mask = torch.ones(3, 5, dtype=torch.bool)
    loss = crf.nll(emissions, states, mask)
    loss.backward()
    assert float(loss) > 0 and crf.transitions.grad is not None and emissions.grad is not None
