"""The multi_label_classification task kind: its CSV reader, its demo generator, its metrics, and
LoRA / full fine-tuning learning every planted label (what the demo DAG runs)."""

from __future__ import annotations

import csv
import math

import numpy as np
import pytest

from helpers import TINY, finetune_job
from seqpeft.util.errors import SeqpeftInputError
from seqpeft.tasks import TASK_KINDS, task_kind, tokenize_task
from seqpeft.tasks.multi_label import DEMO_MOTIFS, read_multilabel_csv, score, write_multilabel_dna_task
from seqpeft.data.tokenize import load_cache

KIND = "multi_label_classification"


def _write(path, text):
    path.write_text(text)
    return path


def test_the_kind_is_registered_with_what_it_declares():
    kind = task_kind(KIND)
    assert kind is TASK_KINDS[KIND]
    assert kind.partitions.name == "replicates" and not kind.per_residue and kind.text_template
    assert "dna_multilabel" in kind.synthetic


def test_reader_returns_a_flag_matrix(tmp_path):
    path = _write(tmp_path / "train.csv", "id,sequence,labels\na,ACGT,1;0;1\nb,acgn,0;0;1\n")
    records = read_multilabel_csv(path)
    assert records.sequences == ["ACGT", "ACGN"] and records.ids == ["a", "b"]
    assert records.labels.tolist() == [[1, 0, 1], [0, 0, 1]]


@pytest.mark.parametrize("text, line, words", [
    ("sequence,label\nACGT,1\n", 1, ["'labels'", "sequence,labels"]),
    ("sequence,labels\nACGT,1;0\nACGT,1;2\n", 3, ["'1;2'", "0/1 flags"]),
    ("sequence,labels\nACGT,1;0\nACGT,1;0;1\n", 3, ["3 flag(s)", "2"]),
    ("sequence,labels\nACGT,1;0\nACGT,\n", 3, ["missing labels"]),
    ("sequence,labels\nACGT,1;0\nACXT,1;1\n", 3, ["'X'"]),
])
def test_reader_names_file_line_and_fix(tmp_path, text, line, words):
    path = _write(tmp_path / "train.csv", text)
    with pytest.raises(SeqpeftInputError) as error:
        read_multilabel_csv(path)
    message = str(error.value)
    assert str(path) in message and f"line {line}" in message
    assert all(word in message for word in words), message


def test_tokenize_refuses_a_label_constant_in_training_and_a_split_with_other_labels(tmp_path, tiny_model_dir):
    model = tiny_model_dir("llama")
    for name in ("dev", "test"):
        _write(tmp_path / f"{name}.csv", "sequence,labels\nACGT,1;0\nAGGT,0;1\n")
    _write(tmp_path / "train.csv", "sequence,labels\nACGT,1;0\nAGGT,1;1\n")
    with pytest.raises(SeqpeftInputError, match=r"label0 \(flag 1 of each row\) is 1 in every training row"):
        tokenize_task({"kind": KIND}, tmp_path, model, tmp_path / "cache.npz")
    _write(tmp_path / "train.csv", "sequence,labels\nACGT,1;0\nAGGT,0;1\n")
    _write(tmp_path / "test.csv", "sequence,labels\nACGT,1;0;0\n")
    with pytest.raises(SeqpeftInputError, match="test.csv.*line 2.*3 flag"):
        tokenize_task({"kind": KIND}, tmp_path, model, tmp_path / "cache.npz")
    assert not (tmp_path / "cache.npz").exists()


def test_demo_generator_plants_exactly_the_labelled_motifs(tmp_path):
    write_multilabel_dna_task(tmp_path, seed=3, n_train=60, n_dev=10, n_test=10)
    with open(tmp_path / "train.csv") as handle:
        rows = list(csv.DictReader(handle))
    assert len(rows) == 60
    flags = np.array([[int(flag) for flag in row["labels"].split(";")] for row in rows])
    holds = np.array([[motif in row["sequence"] for motif in DEMO_MOTIFS] for row in rows])
    assert (flags == holds).all()
    assert 0 < flags.sum(axis=0).min() and flags.sum(axis=0).max() < 60  # every label present and absent
    write_multilabel_dna_task(tmp_path / "again", seed=3, n_train=60, n_dev=10, n_test=10)
    assert (tmp_path / "again" / "train.csv").read_text() == (tmp_path / "train.csv").read_text()


def test_score_per_label_and_macro_means():
    truth = np.array([[1, 0], [0, 0], [1, 1], [0, 1]])
    logits = np.array([[2.0, -1.0], [-2.0, -3.0], [1.0, -0.5], [-1.0, 2.0]])  # label 1 wrong on row 2
    metrics = score(None, {"labels": truth, "logits": logits, "loss": np.ones(4), "count": np.full(4, 2)})
    assert metrics["mcc_label0"] == pytest.approx(1.0)
    assert metrics["mcc_label1"] == pytest.approx(1 / math.sqrt(3))
    assert metrics["mcc"] == pytest.approx((1 + 1 / math.sqrt(3)) / 2)
    assert metrics["auroc_label1"] == pytest.approx(1.0)  # the ranking is right although row 2's threshold is not
    assert metrics["accuracy"] == pytest.approx(7 / 8) and metrics["subset_accuracy"] == pytest.approx(3 / 4)
    assert metrics["loss"] == pytest.approx(0.5)


@pytest.fixture(scope="module")
def marks(tmp_path_factory, tiny_model_dir):
    from seqpeft.models.prepare import prepare_model

    root = tmp_path_factory.mktemp("marks")
    write_multilabel_dna_task(root / "data", seed=7, n_train=800, n_dev=200, n_test=300)
    spec = {"build": {"family": "llama", **TINY}, "tokenizer": "nucleotide", "max_length": 128, "pooling": "mean"}
    prepare_model("llama", spec, root / "model", tiny_model_dir("llama").parent / "tokenizer_nucleotide")
    tokenize_task({"kind": KIND}, root / "data", root / "model", root / "cache.npz")
    return root, spec


@pytest.mark.parametrize("method, method_spec", [("lora", {"r": 8, "lora_alpha": 16, "lora_dropout": 0.05}), ("full", {})])
def test_lora_and_full_learn_every_label_and_predict_reproduces_the_run(marks, tmp_path, method, method_spec):
    """The demo's settings (config/demo.yaml): MCC >= 0.5 on every label; `seqpeft evaluate` on the
    artifacts gives the run's test metrics and `seqpeft predict` one probability per label."""
    from seqpeft.training.evaluate import evaluate_file, load_predictor, predict_file
    from seqpeft.training.launch import run_finetune

    root, spec = marks
    cache = load_cache(root / "cache.npz")
    assert cache.splits["train"].labels.shape == (800, 3) and cache.meta["label_names"] == ["label0", "label1", "label2"]
    job = finetune_job(root / "cache.npz", root / "model", tmp_path / "run", method=method, method_spec=method_spec,
                       kind=KIND, model_spec=spec,
                       training={"epochs": 10, "batch_size": 32, "learning_rate": 4e-3, "patience": 3, "device": "cpu"})
    metrics = run_finetune(job)
    assert metrics["task_kind"] == KIND
    assert min(metrics["test"][f"mcc_label{k}"] for k in range(3)) >= 0.5, metrics["test"]
    assert metrics["test"]["auroc"] > 0.85
    predictor = load_predictor(tmp_path / "run" / "artifacts")
    again = evaluate_file(predictor, root / "data" / "test.csv")
    for key in ("mcc", "mcc_label0", "auroc_label2", "loss"):
        assert again[key] == pytest.approx(metrics["test"][key], abs=1e-5)
    assert predict_file(predictor, root / "data" / "test.csv", tmp_path / "pred.csv") == 300
    with open(tmp_path / "pred.csv") as handle:
        rows = list(csv.DictReader(handle))
    assert list(rows[0]) == ["id", "prediction", "prob_label0", "prob_label1", "prob_label2"]
    first = [float(rows[0][f"prob_label{k}"]) for k in range(3)]
    assert rows[0]["prediction"] == ";".join("1" if p > 0.5 else "0" for p in first)
    import pandas as pd
    from seqpeft.tasks import task_kind

    frame = pd.read_parquet(tmp_path / "run" / "predictions_test.parquet")
    assert list(frame.columns[:4]) == ["example_id", "label_label0", "predicted_label0", "prob_label0"]
    assert len(frame) == 300 and frame["prob_label2"].iloc[0] == pytest.approx(float(rows[0]["prob_label2"]), abs=1e-5)
    assert (frame["label_label1"].to_numpy() == cache.splits["test"].labels[:, 1]).all()
    assert task_kind(KIND).score_predictions(frame) == pytest.approx(metrics["test"]["mcc"], abs=1e-12)
