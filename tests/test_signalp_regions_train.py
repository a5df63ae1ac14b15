"""``signal_peptide.labels: regions`` end to end on a tiny ESM: train, select, save, reload, predict."""

from __future__ import annotations

import csv

import numpy as np
import pytest

from seqpeft.data import SP_TYPES, read_signalp_fasta
from seqpeft.demo_data import generate_source
from seqpeft.signalp_regions import NUM_REGION_STATES, RegionCRF
from seqpeft.tokenize import tokenize_task
from seqpeft.train import FinetuneJob, run_finetune


@pytest.fixture(scope="module")
def sp_task(tmp_path_factory, tiny_model_dir):
    root = tmp_path_factory.mktemp("sp_regions")
    generate_source({"synthetic": "signalp", "seed": 3, "n_per_partition": 30}, root / "data")
    tokenize_task({"kind": "signal_peptide"}, root / "data" / "train_set.fasta", tiny_model_dir("esm"), root / "cache.npz")
    return root


@pytest.mark.parametrize("method", ["frozen", "lora"])
def test_region_runs_train_reload_and_predict(sp_task, tiny_model_dir, tmp_path, method):
    from seqpeft.evaluate import load_predictor, predict_file

    task_spec = {"kind": "signal_peptide", "signal_peptide": {"labels": "regions", "region_regularization_alpha": 0.5}}
    job = FinetuneJob("sp", "tiny_esm", method, "t0v1", task_spec, {"max_length": 96}, {},
                      {"epochs": 2, "batch_size": 16, "learning_rate": 5e-3}, sp_task / "cache.npz",
                      tiny_model_dir("esm"), tmp_path / "run", threads=1)
    metrics = run_finetune(job)
    assert np.isfinite(metrics["dev"]["selection"]) and np.isfinite(metrics["test"]["loss"])
    predictor = load_predictor(tmp_path / "run" / "artifacts")
    assert isinstance(predictor.model.crf, RegionCRF)
    assert predictor.model.head.out_features == NUM_REGION_STATES
    test_records = [r for r in read_signalp_fasta(sp_task / "data" / "train_set.fasta") if r.partition == 0]
    fasta = tmp_path / "test.fasta"
    fasta.write_text("".join(f">{r.accession}\n{r.sequence}\n" for r in test_records))
    predict_file(predictor, fasta, tmp_path / "pred.csv")
    with open(tmp_path / "pred.csv") as handle:
        rows = list(csv.DictReader(handle))
    names = [row.get("sp_type_name", row.get("prediction")) for row in rows]
    assert all(name in SP_TYPES for name in names)
    accuracy = np.mean([name == r.sp_type for name, r in zip(names, test_records)])
    assert accuracy == pytest.approx(metrics["test"]["accuracy"], abs=1e-9)
