"""Multi-process fine-tuning: 2 CPU processes (gloo) train like 1 process with the same global batch.

Real worker processes on a tiny config-built Llama. Dropout is off (head and adapters), so the
only difference between 1 and 2 processes is float32 summation order: the per-rank loss sums
meet in an all-reduce instead of inside one matmul. That moves losses by ~1e-7 relative over the
28 steps here; the tolerance is 1e-5 relative, far below any real difference (a wrong loss scale
or a lost shard changes the first train loss in the second or third digit).
"""

from __future__ import annotations

import csv
import json
import signal

import numpy as np
import pytest

from helpers import finetune_job, interrupt_job_after_checkpoint, motif_task
from seqpeft.util.errors import SeqpeftInputError
from seqpeft.training.launch import run_finetune
from seqpeft.config.settings import FinetuneJob

# 196 = 13 x 15 + 1: every batch splits unevenly (8/7 rows) and the last batch of an epoch leaves
# rank 1 without a row; dev (51) and test (49) do not split evenly either.
TRAINING = {"epochs": 2, "batch_size": 15, "learning_rate": 4e-3, "patience": 10, "evals_per_epoch": 2}
NO_DROPOUT = {"max_length": 64, "head_dropout": 0.0}
RELATIVE = 1e-5


@pytest.fixture(scope="module")
def task(tmp_path_factory, tiny_model_dir):
    root = tmp_path_factory.mktemp("distributed")
    model_dir = tiny_model_dir("llama")
    motif_task(root, model_dir, seed=4, n_train=196, n_dev=51, n_test=49)
    return root, model_dir


def _job(task, method, out, processes=1, method_spec=None, **training) -> FinetuneJob:
    root, model_dir = task
    return finetune_job(root / "cache.npz", model_dir, out, task="t", method=method, model_spec=NO_DROPOUT,
                        method_spec=method_spec, training={**TRAINING, **training, "processes": processes},
                        threads=processes)  # one thread per process


def _history(run_dir) -> list[dict]:
    with open(run_dir / "history.csv") as handle:
        return [{k: float(v) for k, v in row.items() if k != "wall_seconds"} for row in csv.DictReader(handle)]


def _assert_same_training(run_dir, reference_dir) -> None:
    history, reference = _history(run_dir), _history(reference_dir)
    assert [row["step"] for row in history] == [row["step"] for row in reference]
    for row, expected in zip(history, reference):
        assert row == pytest.approx(expected, rel=RELATIVE), row["step"]
    metrics = json.loads((run_dir / "metrics.json").read_text())
    expected = json.loads((reference_dir / "metrics.json").read_text())
    for split in ("dev", "test"):
        assert metrics[split] == pytest.approx(expected[split], rel=RELATIVE), split
    assert (metrics["best_step"], metrics["steps"]) == (expected["best_step"], expected["steps"])


def test_two_processes_train_like_one(task, tmp_path, capfd):
    from seqpeft.training.evaluate import load_predictor, predict_file

    lora = {"lora_dropout": 0.0}
    run_finetune(_job(task, "lora", tmp_path / "one", method_spec=lora))
    capfd.readouterr()
    metrics = run_finetune(_job(task, "lora", tmp_path / "two", processes=2, method_spec=lora))
    log = capfd.readouterr().out
    _assert_same_training(tmp_path / "two", tmp_path / "one")
    assert metrics["world_size"] == 2 and metrics["distributed"] == "ddp"
    assert metrics["train_samples_per_second"] > 0 and metrics["peak_memory_mb"] > 0
    # rank 0 alone reports and writes: one start and one done line, nothing but the outputs in the run dir
    assert log.count("[seqpeft] start ") == 1 and log.count("[seqpeft] done ") == 1, log
    assert sorted(p.name for p in (tmp_path / "two").iterdir()) == ["artifacts", "history.csv", "metrics.json", "predictions_test.parquet"]
    # the saved adapter is the trained one
    predict_file(load_predictor(tmp_path / "two" / "artifacts"), task[0] / "data" / "test.csv", tmp_path / "pred.csv")
    with open(tmp_path / "pred.csv") as predicted, open(task[0] / "data" / "test.csv") as truth:
        hits = [int(p["prediction"]) == int(t["label"]) for p, t in zip(csv.DictReader(predicted), csv.DictReader(truth))]
    assert np.mean(hits) == pytest.approx(metrics["test"]["accuracy"], abs=1e-9)


def test_sigterm_saves_a_checkpoint_and_the_rerun_resumes_with_adalora(task, tmp_path, capfd):
    """AdaLoRA: per-step budget update on all-reduced gradients and an extra (orthogonality) loss."""
    adalora = {"lora_dropout": 0.0}
    run_finetune(_job(task, "adalora", tmp_path / "one", method_spec=adalora))
    run_dir = tmp_path / "two"
    job = _job(task, "adalora", run_dir, processes=2, method_spec=adalora)
    output = interrupt_job_after_checkpoint(job.to_dict(), signal.SIGTERM)
    checkpoint = run_dir / "checkpoint" / "state.pt"
    assert "checkpoint saved" in output and "Preempted" in output, output
    assert checkpoint.is_file() and not (run_dir / "metrics.json").exists()
    capfd.readouterr()
    run_finetune(job)
    resumed = capfd.readouterr().out
    assert "resuming from step" in resumed, resumed
    step = int(resumed.split("resuming from step ")[1].split()[0])
    assert 0 < step < 28
    _assert_same_training(run_dir, tmp_path / "one")
    assert not (run_dir / "checkpoint").exists()


def test_fsdp_full_fine_tuning_trains_like_one_process(task, tmp_path):
    from seqpeft.training.evaluate import load_predictor, predict_file

    run_finetune(_job(task, "full", tmp_path / "one", epochs=1))
    metrics = run_finetune(_job(task, "full", tmp_path / "two", processes=2, distributed="fsdp", epochs=1))
    _assert_same_training(tmp_path / "two", tmp_path / "one")
    assert metrics["distributed"] == "fsdp"
    # the sharded weights were gathered into whole ones for the saved backbone
    predict_file(load_predictor(tmp_path / "two" / "artifacts"), task[0] / "data" / "test.csv", tmp_path / "pred.csv")
    with open(tmp_path / "pred.csv") as predicted, open(task[0] / "data" / "test.csv") as truth:
        hits = [int(p["prediction"]) == int(t["label"]) for p, t in zip(csv.DictReader(predicted), csv.DictReader(truth))]
    assert np.mean(hits) == pytest.approx(metrics["test"]["accuracy"], abs=1e-9)


def test_input_error_in_the_workers_reaches_the_job_as_one(task, tmp_path):
    """Two GPUs asked for where there are none: the ranks find out and the job says so in one line."""
    job = _job(task, "lora", tmp_path / "x")
    job.gpus = 2
    with pytest.raises(SeqpeftInputError, match="asks for 2 GPUs but [01] (is|are) visible"):
        run_finetune(job)
    assert not (tmp_path / "x").exists()


@pytest.mark.parametrize(("method", "training", "message"), [
    ("lora", {"batch_size": 1}, "batch_size 1 is smaller than the job's 2 processes"),
    ("adalora", {"distributed": "fsdp"}, "'fsdp' shards parameters"),
    ("lora", {"device": "cuda"}, "several processes of one job train on CPU"),
    ("lora", {"distributed": "zero"}, "training.distributed 'zero' is unknown"),
])
def test_settings_that_cannot_run_fail_before_any_process_starts(task, tmp_path, capfd, method, training, message):
    with pytest.raises(SeqpeftInputError, match=message):
        run_finetune(_job(task, method, tmp_path / "x", processes=2, **training))
    assert "processes (" not in capfd.readouterr().out  # the launcher's first line: no worker was started


def test_processes_and_gpus_do_not_mix(task, tmp_path):
    job = _job(task, "lora", tmp_path / "x", processes=2)
    job.gpus = 2
    with pytest.raises(SeqpeftInputError, match="processes is for CPU jobs"):
        run_finetune(job)


def test_tuning_trials_train_in_one_process(task, tmp_path, capfd):
    """A trial reports every evaluation to its study from the calling process, so it runs alone."""
    evaluations = []
    result = run_finetune(_job(task, "frozen", tmp_path / "trial", processes=2, epochs=1), dev_only=True,
                          on_evaluate=lambda number, dev: evaluations.append(number))
    assert evaluations == [1, 2] and result["training"]["processes"] == 1
    assert "processes (" not in capfd.readouterr().out and not (tmp_path / "trial").exists()
