"""The regression task kind: its CSV reader and bad inputs, standardised targets, its metrics,
training on the demo's GC-content task, `seqpeft evaluate` reproducing a run's test metrics and
`seqpeft predict` writing values on the original scale; and the SignalP-derived protein tasks."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest

from helpers import TINY, finetune_job, shared_path
from seqpeft.util.errors import SeqpeftInputError
from seqpeft.tasks import TASK_KINDS, task_kind, tokenize_task
from seqpeft.tasks.regression import read_regression_csv, regression_metrics, write_gc_regression_task
from seqpeft.data.tokenize import load_cache

KIND = "regression"


def _write(path, text):
    path.write_text(text)
    return path


def test_the_kind_is_registered_with_its_score():
    kind = task_kind(KIND)
    assert kind is TASK_KINDS[KIND] and kind.score == "spearman" and kind.partitions.name == "replicates"
    assert "dna_gc_regression" in kind.synthetic


def test_reader_returns_a_target_matrix(tmp_path):
    records = read_regression_csv(_write(tmp_path / "t.csv", "id,sequence,target\na,ACGT,1.5;-2\nb,acgn,3e-1;0\n"))
    assert records.ids == ["a", "b"] and records.sequences == ["ACGT", "ACGN"]
    assert records.labels.tolist() == [[1.5, -2.0], [0.3, 0.0]]


@pytest.mark.parametrize("text, line, words", [
    ("sequence,label\nACGT,1\n", 1, ["'target'", "sequence,target"]),
    ("sequence,target\nACGT,1.0\nACGT,high\n", 3, ["'high' is not a number"]),
    ("sequence,target\nACGT,1.0\nACGT,\n", 3, ["missing target"]),
    ("sequence,target\nACGT,1.0\nACGT,nan\n", 3, ["not a finite number", "NaN/inf"]),
    ("sequence,target\nACGT,1.0\nACGT,-inf\n", 3, ["not a finite number"]),
    ("sequence,target\nACGT,1.0;2\nACGT,1\n", 3, ["1 value(s)", "2"]),
    ("sequence,target\nACGT,1.0\nACDT,1\n", 3, ["'D'", "the dna alphabet", "family: dna | protein"]),
    ("sequence,target,target\nACGT,1.0,2.0\n", 1, ["'target' appears 2 times", "keep one column"]),
])
def test_reader_names_file_line_and_fix(tmp_path, text, line, words):
    path = _write(tmp_path / "train.csv", text)
    with pytest.raises(SeqpeftInputError) as error:
        read_regression_csv(path)
    message = str(error.value)
    assert str(path) in message and f"line {line}" in message
    assert all(word in message for word in words), message


def test_tokenize_standardises_on_train_and_refuses_a_constant_target(tmp_path, tiny_model_dir):
    model = tiny_model_dir("llama")
    _write(tmp_path / "train.csv", "sequence,target\nACGT,1\nAGGT,3\nAGGA,5\n")
    for name in ("dev", "test"):
        _write(tmp_path / f"{name}.csv", "sequence,target\nACGT,7\nAGGT,1\n")
    tokenize_task({"kind": KIND}, tmp_path, model, tmp_path / "cache.npz")
    cache = load_cache(tmp_path / "cache.npz")
    assert cache.meta["fitted"]["target_mean"] == [3.0]
    assert cache.meta["fitted"]["target_std"] == pytest.approx([np.std([1, 3, 5])])
    assert cache.splits["dev"].labels[:, 0] == pytest.approx([4 / np.std([1, 3, 5]), -2 / np.std([1, 3, 5])])
    assert cache.meta["alphabet"] == "ACGTN"
    _write(tmp_path / "train.csv", "sequence,target\nACGT,2;1\nAGGT,2;3\n")
    for name in ("dev", "test"):
        _write(tmp_path / f"{name}.csv", "sequence,target\nACGT,7;1\n")
    with pytest.raises(SeqpeftInputError, match=r"train.csv: target0 \(value 1 of each row's target\) is 2 in every"):
        tokenize_task({"kind": KIND}, tmp_path, model, tmp_path / "cache2.npz")
    assert not (tmp_path / "cache2.npz").exists()


def test_metrics_per_target_and_means():
    truth = np.array([[1.0, 0.0], [2.0, 1.0], [3.0, 0.0], [4.0, 1.0]])
    predicted = np.array([[1.5, 0.0], [2.5, 1.0], [3.5, 0.0], [3.0, 1.0]])
    metrics = regression_metrics(truth, predicted)
    assert metrics["spearman_target0"] == pytest.approx(0.8) and metrics["mae_target0"] == pytest.approx(0.625)
    assert metrics["r2_target1"] == pytest.approx(1.0) and metrics["rmse_target1"] == pytest.approx(0.0)
    assert metrics["spearman"] == pytest.approx((0.8 + 1.0) / 2)
    assert np.isnan(regression_metrics(truth[:, :1], np.ones((4, 1)))["pearson"])  # constant predictions


@pytest.fixture(scope="module")
def gc_task(tmp_path_factory, tiny_model_dir):
    from seqpeft.models.prepare import prepare_model

    root = tmp_path_factory.mktemp("gc")
    write_gc_regression_task(root / "data", seed=7, n_train=600, n_dev=150, n_test=200, length=60)
    spec = {"build": {"family": "llama", **TINY}, "tokenizer": "nucleotide", "max_length": 128, "pooling": "mean"}
    prepare_model("llama", spec, root / "model", tiny_model_dir("llama").parent / "tokenizer_nucleotide")
    tokenize_task({"kind": KIND}, root / "data", root / "model", root / "cache.npz")
    return root, spec


def test_lora_learns_gc_content_and_evaluate_and_predict_reproduce_the_run(gc_task, tmp_path):
    from seqpeft.training.evaluate import evaluate_file, load_predictor, predict_file
    from seqpeft.training.launch import run_finetune

    root, spec = gc_task
    job = finetune_job(root / "cache.npz", root / "model", tmp_path / "run", method="lora",
                       method_spec={"r": 8, "lora_alpha": 16, "lora_dropout": 0.05}, kind=KIND, model_spec=spec,
                       training={"epochs": 6, "batch_size": 32, "learning_rate": 4e-3, "patience": 3, "device": "cpu"})
    metrics = run_finetune(job)
    assert metrics["score"] == "spearman" and metrics["regression"] == {"select_on": "spearman"}
    assert metrics["test"]["spearman"] >= 0.5, metrics["test"]
    assert metrics["dev"]["selection"] == pytest.approx(metrics["dev"]["spearman"])
    with open(tmp_path / "run" / "history.csv") as handle:
        assert list(csv.DictReader(handle))[0].keys() >= {"dev_spearman", "dev_rmse"}
    predictor = load_predictor(tmp_path / "run" / "artifacts")
    again = evaluate_file(predictor, root / "data" / "test.csv")
    for key in ("spearman", "pearson", "r2", "rmse", "mae", "loss"):
        assert again[key] == pytest.approx(metrics["test"][key], abs=1e-4), key
    assert predict_file(predictor, root / "data" / "test.csv", tmp_path / "pred.csv") == 200
    with open(tmp_path / "pred.csv") as handle:
        rows = list(csv.DictReader(handle))
    with open(root / "data" / "test.csv") as handle:
        truth = np.array([float(row["target"]) for row in csv.DictReader(handle)])
    predicted = np.array([float(row["prediction"]) for row in rows])
    assert list(rows[0]) == ["id", "prediction", "pred_target0"]
    # the original scale (GC percent), not standardised values
    assert abs(predicted.mean() - truth.mean()) < 0.5 * truth.std() and predicted.std() > 0.3 * truth.std()
    assert np.sqrt(np.mean((predicted - truth) ** 2)) == pytest.approx(metrics["test"]["rmse"], rel=1e-3)
    saved = json.loads((tmp_path / "run" / "artifacts" / "seqpeft.json").read_text())
    assert saved["fitted"]["target_mean"][0] == pytest.approx(load_cache(root / "cache.npz").meta["fitted"]["target_mean"][0])
    # predictions_test.parquet: the original scale, one row per test example, its score the run's
    import pandas as pd

    from seqpeft.core.registry import task_kind

    frame = pd.read_parquet(tmp_path / "run" / "predictions_test.parquet")
    assert list(frame.columns) == ["example_id", "target_target0", "predicted_target0"] and len(frame) == 200
    assert np.allclose(np.sort(frame["target_target0"]), np.sort(truth), atol=1e-4)
    assert task_kind(KIND).score_predictions(frame) == pytest.approx(metrics["test"]["spearman"], abs=1e-6)


def test_signalp_derived_tasks_follow_the_homology_partitions(tmp_path):
    from seqpeft.data.readers import SP_TYPES
    from seqpeft.tasks.signal_peptide.derived import derive_signalp_task
    from seqpeft.data.signalp import read_signalp_fasta
    from seqpeft.tasks.signal_peptide.metrics import sp_length

    fasta = shared_path("data/signalp/train_set.fasta")
    written = derive_signalp_task(fasta, tmp_path / "type", "signalp_sp_type", seed=0, n_train=300, n_dev=100,
                                  n_test=100)
    records = {record.accession: record for record in read_signalp_fasta(fasta)}
    for split, partition in (("train", 0), ("dev", 1), ("test", 2)):
        with open(tmp_path / "type" / f"{split}.csv") as handle:
            rows = list(csv.DictReader(handle))
        assert len(rows) == written[split]
        assert all(records[row["id"]].partition == partition for row in rows)
        assert all(SP_TYPES[int(row["label"])] == records[row["id"]].sp_type for row in rows)
        assert {int(row["label"]) for row in rows} == set(range(6))  # every type kept in a slice
    derive_signalp_task(fasta, tmp_path / "length", "signalp_sp_length")
    with open(tmp_path / "length" / "test.csv") as handle:
        rows = list(csv.DictReader(handle))
    with_sp = [r for r in records.values() if r.partition == 2 and r.sp_type != "NO_SP"]
    assert len(rows) == len(with_sp)
    assert all(float(row["target"]) == sp_length(records[row["id"]].labels) > 0 for row in rows)


@pytest.fixture(scope="module")
def small_task(tmp_path_factory, tiny_model_dir):
    """``small_task(name)``: (cache, model directory, task spec) of a small slice of one of the three
    tasks issue 24 added to the demo, tokenized for its tiny model (built once per module)."""
    from seqpeft.tasks.signal_peptide.derived import derive_signalp_task

    built = {}

    def make(name: str):
        if name not in built:
            kind, family = SMALL_TASKS[name]
            root = tmp_path_factory.mktemp(name)
            if name == "dna_regression":
                write_gc_regression_task(root / "data", seed=7, n_train=96, n_dev=48, n_test=48, length=60)
            else:
                derive = "signalp_sp_type" if kind == "sequence_classification" else "signalp_sp_length"
                derive_signalp_task(shared_path("data/signalp/train_set.fasta"), root / "data", derive, seed=0,
                                    n_train=96, n_dev=48, n_test=48)
            model = tiny_model_dir("esm" if family == "protein" else "llama")
            task_spec = {"kind": kind, "family": family}
            tokenize_task(task_spec, root / "data", model, root / "cache.npz")
            built[name] = root / "cache.npz", model, task_spec
        return built[name]

    return make


# the demo's SignalP type (protein classification), SignalP length (protein regression) and GC
# content (DNA regression) tasks: kind and family
SMALL_TASKS = {"protein_classification": ("sequence_classification", "protein"),
               "protein_regression": (KIND, "protein"), "dna_regression": (KIND, "dna")}


def _methods(task: str) -> list[str]:
    from seqpeft.methods.registry import METHOD_NAMES

    # QLoRA has tests of its own (4-bit kernels); ESM has no past-key-values for prefix tuning
    left_out = {"qlora", "prefix_tuning"} if SMALL_TASKS[task][1] == "protein" else {"qlora"}
    return [method for method in METHOD_NAMES if method not in left_out]


@pytest.mark.slow
@pytest.mark.parametrize("task, method", [(task, method) for task in SMALL_TASKS for method in _methods(task)])
def test_every_method_trains_the_protein_and_regression_tasks(small_task, tmp_path, task, method):
    import pandas as pd

    from seqpeft.training.launch import run_finetune

    cache, model, task_spec = small_task(task)
    job = finetune_job(cache, model, tmp_path / "run", method=method, kind=task_spec["kind"],
                       model_spec={"max_length": 128}, task_spec=task_spec,
                       training={"epochs": 2, "batch_size": 16, "learning_rate": 4e-3, "device": "cpu"})
    metrics = run_finetune(job)
    assert 0 < metrics["trainable_params"] <= metrics["total_params"]
    frame = pd.read_parquet(tmp_path / "run" / "predictions_test.parquet")
    with open(cache.parent / "data" / "test.csv") as handle:
        assert len(frame) == sum(1 for _ in csv.DictReader(handle))  # one row per test example
    if task_spec["kind"] == "sequence_classification":
        assert metrics["score"] == "mcc" and -1 <= metrics["test"]["mcc"] <= 1 and 0 <= metrics["test"]["f1"] <= 1
        assert set(frame["label"]) <= set(range(6)) and frame["label"].nunique() > 2  # SP type ids, several types
        return
    assert metrics["score"] == "spearman" and np.isfinite(metrics["test"]["rmse"]) and metrics["test"]["mae"] > 0
    # predictions on the original scale (SP lengths in residues, GC percent), not standardised ones
    truth, predicted = frame["target_target0"], frame["predicted_target0"]
    assert truth.mean() > 10 and abs(predicted.mean() - truth.mean()) < 2 * truth.std(), (truth.mean(), predicted.mean())


def _run_metrics(root, task, method, kind, score, test, dev, trainable):
    import json as _json

    metrics = {"task": task, "model": "m", "method": method, "partition": "0", "task_kind": kind, "score": score,
               "test": test, "dev": dev, "trainable_params": trainable, "total_params": 10000, "peak_memory_mb": 100.0,
               "train_seconds": 5.0, "best_epoch": 1}
    path = root / "runs" / task / "m" / method / "0" / "metrics.json"
    path.parent.mkdir(parents=True)
    path.write_text(_json.dumps(metrics))
    return path


def test_summary_table_and_figures_rank_each_kind_by_its_own_score(tmp_path):
    """A regression run needs no MCC: summary and table carry its Spearman as test_score beside
    classification runs' MCC, and its Pareto and over-time figures plot Spearman."""
    import pandas as pd

    from seqpeft.analysis.aggregate import write_summary
    from seqpeft.analysis.plots import plot_mcc_over_time, plot_pareto

    classification = {"mcc": 0.6, "accuracy": 0.8, "f1": 0.7, "precision": 0.7, "recall": 0.7, "loss": 0.4}
    files = [_run_metrics(tmp_path, "cls", "lora", "sequence_classification", "mcc", classification, classification, 10)]
    for method, spearman, trainable in (("lora", 0.8, 10), ("full", 0.9, 10000), ("frozen", 0.2, 5)):
        scores = {"spearman": spearman, "pearson": 0.7, "r2": 0.5, "rmse": 3.0, "mae": 2.0, "loss": 0.5,
                  "selection": spearman}
        files.append(_run_metrics(tmp_path, "reg", method, "regression", "spearman", scores, scores, trainable))
    write_summary(files, tmp_path / "summary.csv", tmp_path / "table.csv")
    summary = pd.read_csv(tmp_path / "summary.csv").set_index(["task", "method"])
    assert summary.loc[("reg", "full"), "test_score"] == 0.9 and summary.loc[("reg", "full"), "score"] == "spearman"
    assert summary.loc[("cls", "lora"), "test_score"] == 0.6 and pd.isna(summary.loc[("reg", "lora"), "test_mcc"])
    table = pd.read_csv(tmp_path / "table.csv").set_index(["task", "method"])
    assert float(table.loc[("reg", "frozen"), "test_score"]) == 0.2 and table.loc[("reg", "frozen"), "score"] == "spearman"
    figure = plot_pareto(tmp_path / "summary.csv", "reg", "params", tmp_path / "p.png", tmp_path / "p.svg")
    assert "Spearman" in figure.axes[0].get_ylabel() and (tmp_path / "p.png").stat().st_size > 1000
    history = tmp_path / "runs" / "reg" / "m" / "lora" / "0" / "history.csv"
    history.write_text("step,epoch,wall_seconds,train_loss,dev_loss,dev_spearman,dev_rmse\n1,1,1.0,1,1,0.3,4\n"
                       "2,2,2.0,1,1,0.5,3\n")
    figure = plot_mcc_over_time([history], "reg", tmp_path / "t.png", tmp_path / "t.svg", score="spearman")
    assert figure.axes[0].get_ylabel() == "Dev Spearman"
