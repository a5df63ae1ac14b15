"""Fine-tuning jobs on tiny config-built models: outputs, learning, save/load, errors."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest

from helpers import dev_losses, finetune_job, motif_task
from seqpeft.tasks.demo_data import generate_source
from seqpeft.util.errors import SeqpeftInputError
from seqpeft.data.tokenize import load_cache
from seqpeft.tasks import tokenize_task
from seqpeft.core.batching import length_bucketed_batches
from seqpeft.tasks import fold_indices
from seqpeft.training.launch import run_finetune

TRAINING = {"epochs": 3, "batch_size": 32, "learning_rate": 4e-3, "patience": 3}


@pytest.fixture(scope="module")
def dna_task(tmp_path_factory, tiny_model_dir):
    root = tmp_path_factory.mktemp("dna_task")
    motif_task(root, tiny_model_dir("llama"), n_dev=100, n_test=100)
    return root


def _job(root, method, out, method_spec=None, training=None, model_dir=None, model_spec=None):
    return finetune_job(root / "cache.npz", model_dir, out, method=method, model_spec=model_spec, method_spec=method_spec,
                        training=training or TRAINING)


def test_run_writes_metrics_history_and_reloadable_artifacts(dna_task, tiny_model_dir, tmp_path):
    from seqpeft.training.evaluate import load_predictor, predict_file

    model_dir = tiny_model_dir("llama")
    metrics = run_finetune(_job(dna_task, "lora", tmp_path / "run", model_dir=model_dir))
    saved = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert saved["test"] == metrics["test"]
    assert 0 < saved["trainable_params"] < saved["total_params"]
    assert set(saved["test"]) == {"accuracy", "f1", "mcc", "precision", "recall", "loss"}
    with open(tmp_path / "run" / "history.csv") as handle:
        rows = list(csv.DictReader(handle))
    assert [int(r["step"]) for r in rows] == sorted(int(r["step"]) for r in rows)
    assert float(rows[-1]["wall_seconds"]) > float(rows[0]["wall_seconds"])
    assert 1 <= saved["best_epoch"] <= 3
    # save -> load gives the same predictions as the metrics were computed with
    artifacts = tmp_path / "run" / "artifacts"
    assert (artifacts / "adapter" / "adapter_config.json").is_file()
    predictor = load_predictor(artifacts)
    test_csv = dna_task / "data" / "test.csv"
    predict_file(predictor, test_csv, tmp_path / "pred.csv")
    with open(tmp_path / "pred.csv") as handle:
        predictions = [int(row["prediction"]) for row in csv.DictReader(handle)]
    with open(test_csv) as handle:
        labels = [int(row["label"]) for row in csv.DictReader(handle)]
    accuracy = float(np.mean(np.array(predictions) == np.array(labels)))
    assert accuracy == pytest.approx(saved["test"]["accuracy"], abs=1e-9)
    # predictions_test.parquet: one row per test example, the run's own MCC recomputed from it
    import pandas as pd
    from seqpeft.tasks import task_kind

    frame = pd.read_parquet(tmp_path / "run" / "predictions_test.parquet")
    assert list(frame.columns) == ["example_id", "label", "predicted", "prob_0", "prob_1"]
    assert frame["example_id"].tolist() == list(range(len(labels))) and frame["label"].tolist() == labels
    assert frame["predicted"].tolist() == predictions
    assert np.allclose(frame[["prob_0", "prob_1"]].sum(axis=1), 1.0)
    assert task_kind("sequence_classification").score_predictions(frame) == pytest.approx(saved["test"]["mcc"], abs=1e-12)


def test_cpu_peak_memory_is_the_runs_own(dna_task, tiny_model_dir, tmp_path):
    """peak_memory_mb on CPU is the process's peak from the run's model load on: a larger peak the
    process had before the run does not leak into it, and it is an absolute peak, not a difference."""
    from seqpeft.training.assemble import CPU_PEAK_SINCE_RESET, cpu_peak_mb

    ballast = np.ones(400 * 2**20 // 8)  # a 400 MB peak before the run
    ballast[::512] = 2.0
    del ballast
    before = cpu_peak_mb()
    metrics = run_finetune(_job(dna_task, "frozen", tmp_path / "run", model_dir=tiny_model_dir("llama")))
    assert metrics["memory_device"] == "cpu" and metrics["memory_measure"] == CPU_PEAK_SINCE_RESET
    assert 50 < metrics["peak_memory_mb"] < before - 200, (metrics["peak_memory_mb"], before)


@pytest.mark.parametrize("method", ["full", "frozen", "prompt_tuning"])
def test_methods_train_and_report_their_parameter_counts(dna_task, tiny_model_dir, tmp_path, method):
    model_dir = tiny_model_dir("llama")
    metrics = run_finetune(_job(dna_task, method, tmp_path / method, model_dir=model_dir,
                                training={**TRAINING, "epochs": 1}))
    hidden, labels = 32, 2
    head = hidden * labels + labels
    if method == "frozen":
        assert metrics["trainable_params"] == head
    elif method == "full":
        assert metrics["trainable_params"] == metrics["total_params"]
    else:  # 10 virtual tokens of the hidden size
        assert metrics["trainable_params"] == head + 10 * hidden


def test_full_fine_tuning_learns_the_planted_motif(dna_task, tiny_model_dir, tmp_path):
    metrics = run_finetune(_job(dna_task, "full", tmp_path / "full", model_dir=tiny_model_dir("llama"),
                                training={**TRAINING, "epochs": 6}))
    assert metrics["test"]["mcc"] > 0.5


def test_training_stops_after_the_configured_epochs(dna_task, tiny_model_dir, tmp_path):
    run_finetune(_job(dna_task, "frozen", tmp_path / "frozen", model_dir=tiny_model_dir("llama"),
                      training={**TRAINING, "epochs": 2, "patience": 100}))
    with open(tmp_path / "frozen" / "history.csv") as handle:
        epochs = [float(row["epoch"]) for row in csv.DictReader(handle)]
    assert max(epochs) == pytest.approx(2.0), epochs


def test_same_seed_gives_identical_metrics(dna_task, tiny_model_dir, tmp_path):
    runs = [run_finetune(_job(dna_task, "lora", tmp_path / f"r{i}", model_dir=tiny_model_dir("llama"),
                              training={**TRAINING, "epochs": 1})) for i in range(2)]
    assert runs[0]["test"] == runs[1]["test"]


def test_unknown_target_module_lists_the_model_modules(dna_task, tiny_model_dir, tmp_path):
    with pytest.raises(SeqpeftInputError, match="do not exist in model") as error:
        run_finetune(_job(dna_task, "lora", tmp_path / "x", method_spec={"target_modules": ["Wqkv"]},
                          model_dir=tiny_model_dir("llama")))
    assert "q_proj" in str(error.value)
    assert not (tmp_path / "x" / "metrics.json").exists()


def test_cache_from_another_tokenizer_is_refused(dna_task, tiny_model_dir, tmp_path):
    with pytest.raises(SeqpeftInputError, match="different tokenizer"):
        run_finetune(_job(dna_task, "frozen", tmp_path / "x", model_dir=tiny_model_dir("esm")))


def test_length_bucketed_batches_cover_every_index_once_with_little_padding():
    rng = np.random.default_rng(0)
    lengths = rng.integers(10, 200, size=5000)
    batches = length_bucketed_batches(lengths, 32, 64, np.random.default_rng(1))
    flat = np.concatenate(batches)
    assert sorted(flat.tolist()) == list(range(5000))
    padded = sum(len(b) * lengths[b].max() for b in batches)
    assert 1 - lengths.sum() / padded < 0.05
    assert not np.array_equal(flat[:32], np.argsort(-lengths)[:32])  # batches are shuffled


def test_fold_indices_follow_peft_sp_cross_validation():
    partitions = np.array([0, 1, 2, 0, 1, 2])
    fold = fold_indices(partitions, "t0v1")
    assert fold["test"].tolist() == [0, 3] and fold["dev"].tolist() == [1, 4] and fold["train"].tolist() == [2, 5]
    with pytest.raises(SeqpeftInputError, match="t0v0"):
        fold_indices(partitions, "t0v0")


def test_signal_peptide_cache_aligns_residue_labels(tmp_path, tiny_model_dir):
    generate_source({"synthetic": "signalp", "seed": 1, "n_per_partition": 20}, tmp_path / "sp")
    model_dir = tiny_model_dir("esm")
    tokenize_task({"kind": "signal_peptide"}, tmp_path / "sp" / "train_set.fasta", model_dir, tmp_path / "sp.npz")
    cache = load_cache(tmp_path / "sp.npz")
    split = cache.splits["all"]
    assert len(split) == 60
    for index in range(len(split)):
        assert len(split.sequence(index)) == len(split.residue_labels(index)) + 2


def test_precision_bf16_runs_forward_in_bf16_and_auto_is_fp32_on_cpu(dna_task, tiny_model_dir, tmp_path):
    import torch

    from seqpeft.training.assemble import apply_precision, resolve_precision

    cpu = torch.device("cpu")
    assert resolve_precision(torch, "auto", cpu)[0] == "fp32"
    assert resolve_precision(torch, "bf16", cpu)[0] == "bf16"
    model = torch.nn.Sequential(torch.nn.Linear(4, 2))
    seen = []
    model[0].register_forward_hook(lambda module, inputs, output: seen.append(output.dtype))
    apply_precision(torch, model, "bf16", cpu)
    assert model(torch.ones(3, 4)).dtype == torch.float32 and seen == [torch.bfloat16]
    assert model[0].weight.dtype == torch.float32  # weights and optimizer state stay float32

    bf16 = run_finetune(_job(dna_task, "full", tmp_path / "bf16", model_dir=tiny_model_dir("llama"),
                             training={**TRAINING, "epochs": 6, "precision": "bf16"}))
    assert bf16["precision"] == "bf16" and bf16["test"]["mcc"] > 0.5
    fp32 = run_finetune(_job(dna_task, "frozen", tmp_path / "auto", model_dir=tiny_model_dir("llama"),
                             training={**TRAINING, "epochs": 1}))
    assert fp32["precision"] == "fp32"
    with pytest.raises(SeqpeftInputError, match="precision"):
        run_finetune(_job(dna_task, "frozen", tmp_path / "bad", model_dir=tiny_model_dir("llama"),
                          training={**TRAINING, "precision": "fp16"}))


def test_compile_trains_like_eager_with_one_graph_for_every_batch_width(tmp_path, tiny_model_dir):
    """training.compile: the same training (dev losses) as eager, and dynamic shapes, so that
    length-bucketed batches of many widths do not each trigger a compile."""
    import torch._dynamo
    from torch._dynamo.utils import counters


    generate_source({"synthetic": "dna", "seed": 5, "n_train": 192, "n_dev": 64, "n_test": 64, "length": 40,
                     "motif_copies": 1}, tmp_path / "data")
    for split in ("train", "dev", "test"):  # cut the sequences to 20-40 letters: batches of many widths
        path = tmp_path / "data" / f"{split}.csv"
        with open(path) as handle:
            rows = list(csv.DictReader(handle))
        with open(path, "w", newline="") as handle:
            writer = csv.DictWriter(handle, fieldnames=["sequence", "label"], lineterminator="\n")
            writer.writeheader()
            writer.writerows({"sequence": row["sequence"][:20 + i % 21], "label": row["label"]} for i, row in enumerate(rows))
    model_dir = tiny_model_dir("llama")
    tokenize_task({"kind": "sequence_classification"}, tmp_path / "data", model_dir, tmp_path / "cache.npz")
    assert len(set(load_cache(tmp_path / "cache.npz").splits["train"].lengths.tolist())) > 10

    training = {**TRAINING, "epochs": 2, "batch_size": 16, "bucket_size": 4}
    eager = run_finetune(_job(tmp_path, "lora", tmp_path / "eager", model_dir=model_dir, training=training))
    torch._dynamo.reset()
    counters.clear()
    compiled = run_finetune(_job(tmp_path, "lora", tmp_path / "compiled", model_dir=model_dir,
                                 training={**training, "compile": True}))
    assert compiled["training"]["compile"] is True
    assert 1 <= counters["stats"]["unique_graphs"] <= 4  # training and evaluation graphs, not one per width
    assert dev_losses(tmp_path / "compiled") == pytest.approx(dev_losses(tmp_path / "eager"), rel=1e-4)
    assert compiled["test"]["loss"] == pytest.approx(eager["test"]["loss"], rel=1e-4)
