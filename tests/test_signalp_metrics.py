"""SignalP metrics against values worked out by hand (see the comments for each derivation)."""

from __future__ import annotations

import math

import numpy as np
import pytest

from seqpeft.tasks.signal_peptide.metrics import METRIC_COLUMNS, kingdom_type_table, mcc, mean_mcc2, selection_score, sp_length

# idx  kingdom   true    pred    true site  pred site
#  0   EUKARYA   SP      SP      20         20        exact
#  1   EUKARYA   SP      SP      22         20        off by 2
#  2   EUKARYA   SP      NO_SP   18         17        missed type, but NO_SP keeps its site (off by 1)
#  3   EUKARYA   NO_SP   SP      -1         15        false SP
#  4   EUKARYA   NO_SP   NO_SP   -1         -1
#  5   EUKARYA   LIPO    SP      25         24        LIPO called SP
#  6   EUKARYA   LIPO    LIPO    19         19
#  7   EUKARYA   NO_SP   NO_SP   -1         -1
#  8   NEGATIVE  SP      SP      10         10        another kingdom: must not leak into EUKARYA
ROWS = [
    ("EUKARYA", "SP", "SP", 20, 20), ("EUKARYA", "SP", "SP", 22, 20), ("EUKARYA", "SP", "NO_SP", 18, 17),
    ("EUKARYA", "NO_SP", "SP", -1, 15), ("EUKARYA", "NO_SP", "NO_SP", -1, -1), ("EUKARYA", "LIPO", "SP", 25, 24),
    ("EUKARYA", "LIPO", "LIPO", 19, 19), ("EUKARYA", "NO_SP", "NO_SP", -1, -1), ("NEGATIVE", "SP", "SP", 10, 10),
]


@pytest.fixture(scope="module")
def table():
    kingdom, true_type, pred_type, true_site, pred_site = (np.array(column) for column in zip(*ROWS))
    return kingdom_type_table(kingdom, true_type, pred_type, true_site, pred_site)


def test_mcc2_and_mcc1_for_sp(table):
    sp = table["EUKARYA"]["SP"]
    # MCC2 over all 8 EUKARYA rows: true SP {0,1,2}, predicted SP {0,1,3,5}
    # TP=2 FN=1 FP=2 TN=3 -> (2*3 - 2*1) / sqrt(4*3*5*4) = 4/sqrt(240)
    assert sp["mcc2"] == pytest.approx(4 / math.sqrt(240))
    # MCC1 over true SP or NO_SP {0,1,2,3,4,7}: TP=2 FN=1 FP=1 TN=2 -> (4-1)/sqrt(3*3*3*3) = 1/3
    assert sp["mcc1"] == pytest.approx(1 / 3)


def test_cleavage_site_masking_for_sp(table):
    sp = table["EUKARYA"]["SP"]
    # true sites kept only where true == SP: {0:20, 1:22, 2:18}                    -> 3 true sites
    # predicted kept where pred in {SP, NO_SP}: {0:20, 1:20, 2:17, 3:15, 5:24}      -> 5 predicted sites
    #   (row 5's true site is masked because it is LIPO, its predicted SP site still counts: a false site;
    #    row 6 predicted LIPO is masked)
    # pairs with both defined: row 0 d=0, row 1 d=2, row 2 d=1
    expected_correct = {0: 1, 1: 2, 2: 3, 3: 3}
    for w, correct in expected_correct.items():
        assert sp[f"cs_precision_w{w}"] == pytest.approx(correct / 5)
        assert sp[f"cs_recall_w{w}"] == pytest.approx(correct / 3)


def test_lipo_cell(table):
    lipo = table["EUKARYA"]["LIPO"]
    # MCC2: true LIPO {5,6}, predicted LIPO {6}: TP=1 FN=1 FP=0 TN=6 -> 6/sqrt(1*2*7*6)
    assert lipo["mcc2"] == pytest.approx(6 / math.sqrt(84))
    # MCC1 over LIPO or NO_SP {3,4,5,6,7}: TP=1 FN=1 FP=0 TN=3 -> 3/sqrt(1*2*4*3)
    assert lipo["mcc1"] == pytest.approx(3 / math.sqrt(24))
    # true sites {5:25, 6:19}; predicted kept where pred in {LIPO, NO_SP}: {2:17, 6:19} (4, 7 are -1)
    # both defined: row 6 only, d=0 -> correct 1 at every window; precision 1/2, recall 1/2
    for w in range(4):
        assert lipo[f"cs_precision_w{w}"] == pytest.approx(0.5)
        assert lipo[f"cs_recall_w{w}"] == pytest.approx(0.5)


def test_no_positives_is_nan_not_an_error(table):
    assert all(math.isnan(table["EUKARYA"]["TAT"][c]) for c in METRIC_COLUMNS)
    assert all(math.isnan(v) for cells in table["ARCHAEA"].values() for v in cells.values())
    assert set(table["EUKARYA"]["SP"]) == set(METRIC_COLUMNS)


def test_kingdoms_are_separate(table):
    negative = table["NEGATIVE"]["SP"]
    # one SP row, predicted SP: no negatives at all, MCC's denominator is 0 -> 0.0; one exact site
    assert negative["mcc2"] == 0.0
    assert negative["cs_precision_w0"] == 1.0 and negative["cs_recall_w0"] == 1.0


def test_mean_mcc2_averages_defined_cells(table):
    # defined MCC2: EUKARYA SP 4/sqrt(240), EUKARYA LIPO 6/sqrt(84), NEGATIVE SP 0.0
    assert mean_mcc2(table) == pytest.approx((4 / math.sqrt(240) + 6 / math.sqrt(84) + 0.0) / 3)


def test_selection_score_single_kingdom():
    # PEFT-SP's report_metrics_kingdom_averaged: detection = multi-class MCC of the types:
    # true SP SP NO NO vs predicted SP NO SP NO: TP=1 FN=1 FP=1 TN=1 -> 0.
    # CS MCC = multi-class MCC of site indices over the sequences with a true site: (2, 2), (3, -1).
    # Classes {-1, 2, 3}: true counts t = (0, 1, 1), predicted p = (1, 1, 0), correct c = 1, n = 2:
    # (c*n - t.p) / sqrt((n^2 - p.p)(n^2 - t.t)) = (2 - 1) / sqrt(2 * 2) = 0.5
    kingdom = np.array(["EUKARYA"] * 4)
    scores = selection_score(kingdom, np.array(["SP", "SP", "NO_SP", "NO_SP"]), np.array(["SP", "NO_SP", "SP", "NO_SP"]),
                             np.array([2, 3, -1, -1]), np.array([2, -1, 1, -1]), np.array([5, 5, 5, 5]))
    assert scores["detection_mcc"] == pytest.approx(0.0)
    assert scores["cs_mcc"] == pytest.approx(0.5)
    assert scores["selection"] == pytest.approx(0.5)


def test_selection_score_detection_is_multiclass_and_kingdom_averaged():
    # EUKARYA: a LIPO predicted as SP still counts as "an SP" for a binary detection MCC (1.0);
    # PEFT-SP's multi-class detection MCC sees the wrong type. NEGATIVE: all right (1.0 each).
    kingdom = np.array(["EUKARYA"] * 4 + ["NEGATIVE"] * 3)
    true_type = np.array(["SP", "LIPO", "NO_SP", "NO_SP", "TAT", "SP", "NO_SP"])
    pred_type = np.array(["SP", "SP", "NO_SP", "NO_SP", "TAT", "SP", "NO_SP"])
    sites = np.array([20, 18, -1, -1, 30, 22, -1])  # (one site alone would be a single class: MCC 0)
    scores = selection_score(kingdom, true_type, pred_type, sites, sites, np.full(7, 70))
    # EUKARYA types: classes NO_SP, SP, LIPO; t = (2, 1, 1), p = (2, 2, 0), c = 3, n = 4:
    # (3*4 - (4 + 2 + 0)) / sqrt((16 - 8)(16 - 6)) = 6 / sqrt(80)
    eukarya = 6 / math.sqrt(80)
    assert scores["detection_mcc"] == pytest.approx((eukarya + 1.0) / 2)
    assert scores["cs_mcc"] == pytest.approx(1.0)


def test_helpers():
    assert sp_length("SSSSOOOO") == 4 and sp_length("IIIMMMOOO") == -1 and sp_length("TTTOO") == 3
    assert mcc(np.array([1, 1, 0, 0]), np.array([1, 1, 0, 0])) == pytest.approx(1.0)
    assert math.isnan(mcc(np.array([], bool), np.array([], bool)))
