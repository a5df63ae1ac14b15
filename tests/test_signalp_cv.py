"""The signal-peptide track end to end on a stratified slice of the real SignalP 6.0 file:
6-fold cross-validation with a tiny ESM + CRF, the per-kingdom x type table, figures, predict."""

from __future__ import annotations

import csv
import json
import math
from collections import defaultdict

import pandas as pd
import pytest

from helpers import finetune_job, shared_path
from seqpeft.data.readers import SP_TYPES
from seqpeft.tasks.signal_peptide.metrics import METRIC_COLUMNS
from seqpeft.tasks import tokenize_task
from seqpeft.training.launch import run_finetune

FOLDS = ("t0v1", "t0v2", "t1v0", "t1v2", "t2v0", "t2v1")
PER_CELL = 3  # records per partition x kingdom x type: every cell present in the file is represented


def _stratified_slice(source, out):
    lines = source.read_text().splitlines()
    taken = defaultdict(int)
    kept = []
    for i in range(0, len(lines), 3):
        _, kingdom, sp_type, partition = lines[i][1:].split("|")
        key = (partition, kingdom, sp_type)
        if taken[key] < PER_CELL:
            taken[key] += 1
            kept.extend(lines[i:i + 3])
    out.write_text("\r\n".join(kept) + "\r\n")  # CRLF like the distributed file
    return len(kept) // 3


@pytest.fixture(scope="module")
def cv_runs(tmp_path_factory, tiny_model_dir):
    root = tmp_path_factory.mktemp("signalp_cv")
    count = _stratified_slice(shared_path("data/signalp/train_set.fasta"), root / "slice.fasta")
    model_dir = tiny_model_dir("esm")
    tokenize_task({"kind": "signal_peptide"}, root / "slice.fasta", model_dir, root / "cache.npz")
    training = {"epochs": 2, "batch_size": 16, "learning_rate": 5e-3, "patience": 2}
    metrics = {}
    for fold in FOLDS:
        job = finetune_job(root / "cache.npz", model_dir, root / "runs" / fold, task="signalp", model="tiny_esm",
                           method="lora", partition=fold, kind="signal_peptide", model_spec={"max_length": 96},
                           training=training)
        metrics[fold] = run_finetune(job)
    return root, count, metrics


def test_every_fold_writes_the_kingdom_by_type_table(cv_runs):
    root, count, metrics = cv_runs
    assert 150 <= count <= 220
    for fold in FOLDS:
        saved = json.loads((root / "runs" / fold / "metrics.json").read_text())
        table = saved["test"]["signalp"]
        assert set(table) == {"EUKARYA", "ARCHAEA", "NEGATIVE", "POSITIVE"}
        assert all(set(cell) == set(METRIC_COLUMNS) for types in table.values() for cell in types.values())
        assert "NO_SP" not in table["EUKARYA"]
        # EUKARYA SP has positives in every partition of the slice, so it is always defined
        assert not math.isnan(table["EUKARYA"]["SP"]["mcc2"])
        defined = [c["mcc2"] for types in table.values() for c in types.values() if not math.isnan(c["mcc2"])]
        assert saved["test"]["mcc"] == pytest.approx(sum(defined) / len(defined))
        assert "selection" in saved["dev"] and (root / "runs" / fold / "artifacts" / "crf.safetensors").is_file()


def test_aggregated_table_and_figures(cv_runs, tmp_path):
    from seqpeft.analysis.signal_peptide import plot_cleavage_sites, plot_mcc_bars, write_signalp_table

    root, _, _ = cv_runs
    table = write_signalp_table([root / "runs" / f / "metrics.json" for f in FOLDS], tmp_path / "signalp_table.csv")
    read = pd.read_csv(tmp_path / "signalp_table.csv")
    assert len(read) == len(table) > 0
    for metric in METRIC_COLUMNS:
        assert {f"{metric}_mean", f"{metric}_sd", f"{metric}_n"} <= set(read.columns)
    assert (read["n_runs"] == 6).all() and (read["mcc2_n"] <= 6).all()
    eukarya_sp = read[(read["kingdom"] == "EUKARYA") & (read["sp_type"] == "SP")].iloc[0]
    assert eukarya_sp["mcc2_n"] == 6 and "±" in eukarya_sp["mcc2"]
    plot_mcc_bars(table, tmp_path / "mcc.png", tmp_path / "mcc.svg")
    plot_cleavage_sites(table, tmp_path / "cs.png", tmp_path / "cs.svg")
    assert (tmp_path / "mcc.png").stat().st_size > 1000 and (tmp_path / "cs.svg").stat().st_size > 1000


def test_predict_round_trips_on_a_fasta(cv_runs, tmp_path):
    from seqpeft.training.evaluate import load_predictor, predict_file

    root, count, _ = cv_runs
    fasta = tmp_path / "proteins.fasta"
    lines = (root / "slice.fasta").read_text().splitlines()
    fasta.write_text("".join(f">{lines[i][1:].split('|')[0]}\n{lines[i + 1]}\n" for i in range(0, len(lines), 3)))
    predictor = load_predictor(root / "runs" / "t0v1" / "artifacts")
    assert predict_file(predictor, fasta, tmp_path / "pred.csv") == count
    with open(tmp_path / "pred.csv") as handle:
        rows = list(csv.DictReader(handle))
    assert [r["id"] for r in rows] == [lines[i][1:].split("|")[0] for i in range(0, len(lines), 3)]
    for row in rows:
        assert row["prediction"] in SP_TYPES
        assert (int(row["cleavage_site"]) == -1) == (row["prediction"] == "NO_SP")
        probabilities = [float(row[f"prob_{t}"]) for t in SP_TYPES]
        assert sum(probabilities) == pytest.approx(1.0, abs=1e-4)
        assert max(probabilities) == float(row[f"prob_{row['prediction']}"])
