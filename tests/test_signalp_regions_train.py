"""``signal_peptide.labels: regions`` end to end on a tiny ESM: train, select, save, reload, predict."""

from __future__ import annotations

import csv

import numpy as np
import pytest

from seqpeft.data.readers import SP_TYPES
from seqpeft.data.signalp import read_signalp_fasta
from seqpeft.tasks.demo_data import generate_source
from seqpeft.tasks.signal_peptide.region_labels import NUM_REGION_STATES
from seqpeft.tasks.signal_peptide.regions import RegionCRF
from seqpeft.tasks import tokenize_task
from helpers import finetune_job
from seqpeft.training.launch import run_finetune


@pytest.fixture(scope="module")
def sp_task(tmp_path_factory, tiny_model_dir):
    root = tmp_path_factory.mktemp("sp_regions")
    generate_source({"synthetic": "signalp", "seed": 3, "n_per_partition": 30}, root / "data")
    tokenize_task({"kind": "signal_peptide"}, root / "data" / "train_set.fasta", tiny_model_dir("esm"), root / "cache.npz")
    return root


@pytest.mark.parametrize("method", ["frozen", "lora"])
def test_region_runs_train_reload_and_predict(sp_task, tiny_model_dir, tmp_path, method):
    from seqpeft.training.evaluate import load_predictor, predict_file

    task_spec = {"kind": "signal_peptide", "signal_peptide": {"labels": "regions", "region_regularization_alpha": 0.5}}
    job = finetune_job(sp_task / "cache.npz", tiny_model_dir("esm"), tmp_path / "run", method=method, partition="t0v1",
                       task_spec=task_spec, model_spec={"max_length": 96},
                       training={"epochs": 2, "batch_size": 16, "learning_rate": 5e-3})
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
    # predictions_test.parquet: PEFT-SP's columns per protein, with the truth beside them
    import pandas as pd
    from seqpeft.tasks import task_kind

    frame = pd.read_parquet(tmp_path / "run" / "predictions_test.parquet")
    assert frame["example_id"].tolist() == [r.accession for r in test_records]
    assert frame["true_labels"].tolist() == [r.labels for r in test_records]
    assert frame["sp_type_name"].tolist() == names
    assert frame["cv_position"].tolist() == [int(row["cv_position"]) for row in rows]
    assert task_kind("signal_peptide").score_predictions(frame) == pytest.approx(metrics["test"]["mcc"], abs=1e-12)


# PEFT-SP's README prediction example (its three records, as printed there: two-line, SignalP headers),
# and the same records three-line with their labels from SignalP 6.0's train_set.fasta.
README_TWO_LINE = """>O28846|ARCHAEA|NO_SP|0
MTMTLAKRFTAEVVGTFILVFFGPGAAVITLMIANGADKPNEFNIGIGALGGLGDWFAIGMAFALAIAAV
>Q12UD6|ARCHAEA|SP|1
MKTKGIRMAALFMAMLVVSMFAVAPAMACAPQEPIDKSDEKKVLKVVSDEISLPEEYTISNNPDTDGFIF
>P58300|ARCHAEA|LIPO|0
MRRATYAFALLAILVLGVVASGCIGGGTTTPTQTSPATQPTTTQTPTQTETQAVECGSGKVVIWHAMQPN
"""
README_LABELS = [
    "IIIIIIIIMMMMMMMMMMMMMMMMMMOOOOOOOOOOOOOOOOOOOOOOOOOOOOOOMMMMMMMMMMMMMM",
    "SSSSSSSSSSSSSSSSSSSSSSSSSSSSOOOOOOOOOOOOOOOOOOOOOOOOOOOOOOOOOOOOOOOOOO",
    "LLLLLLLLLLLLLLLLLLLLLLOOOOOOOOOOOOOOOOOOOOOOOOOOOOOOOOOOOOOOOOOOOOOOOO",
]


@pytest.mark.parametrize("labels", ["types", "regions"])
def test_predict_writes_peft_sp_columns_from_two_and_three_line_fasta(sp_task, tiny_model_dir, tmp_path, labels):
    import json

    from seqpeft.training.evaluate import load_predictor, predict_file
    from seqpeft.tasks.signal_peptide.kind import PEFT_SP_COLUMNS

    task_spec = {"kind": "signal_peptide", "signal_peptide": {"labels": labels}}
    job = finetune_job(sp_task / "cache.npz", tiny_model_dir("esm"), tmp_path / "run", method="frozen", partition="t0v1",
                       task_spec=task_spec, model_spec={"max_length": 96},
                       training={"epochs": 1, "batch_size": 16, "learning_rate": 5e-3})
    run_finetune(job)
    predictor = load_predictor(tmp_path / "run" / "artifacts")
    lines = README_TWO_LINE.splitlines()
    (tmp_path / "two.fasta").write_text(README_TWO_LINE)
    (tmp_path / "three.fasta").write_text("".join(f"{lines[2 * i]}\n{lines[2 * i + 1]}\n{README_LABELS[i]}\n" for i in range(3)))
    tables = {}
    for name in ("two", "three"):
        assert predict_file(predictor, tmp_path / f"{name}.fasta", tmp_path / f"{name}.csv") == 3
        with open(tmp_path / f"{name}.csv") as handle:
            header = handle.readline().strip().split(",")[:4]
            handle.seek(0)
            tables[name] = list(csv.DictReader(handle))
        assert tuple(header) == PEFT_SP_COLUMNS
    assert tables["two"] == tables["three"]
    assert [row["id"] for row in tables["two"]] == ["O28846", "Q12UD6", "P58300"]
    for row in tables["two"]:
        type_id = int(row["sp_type_id"])
        assert row["sp_type_name"] == SP_TYPES[type_id] == row["prediction"]
        # NO_SP: -1; the region CRF's Viterbi site may be -1 under a predicted SP type as well
        assert int(row["cv_position"]) == -1 if type_id == 0 else (labels == "regions" or int(row["cv_position"]) > 0)
        probabilities = json.loads(row["sp_type_probabilities"])
        assert len(probabilities) == 6 and sum(probabilities) == pytest.approx(1.0, abs=0.01)
        assert probabilities == [round(float(row[f"prob_{t}"]), 3) for t in SP_TYPES]


def test_a_cache_without_residue_sequences_names_the_fix(sp_task):
    from seqpeft.util.errors import SeqpeftInputError
    from seqpeft.tasks.signal_peptide.regions import _bitmaps
    from seqpeft.data.tokenize import load_cache
    from seqpeft.tasks import task_splits

    split = task_splits(load_cache(sp_task / "cache.npz"), "t0v1")["train"]
    assert _bitmaps(split, np.arange(3), 70, "cpu").shape == (3, 70, NUM_REGION_STATES)
    del split.extra["sequence"]  # as in caches tokenized before region labels existed
    with pytest.raises(SeqpeftInputError, match="rerun the tokenize rule"):
        _bitmaps(split, np.arange(3), 70, "cpu")
