"""Killed fine-tuning jobs resume and end exactly where an uninterrupted run ends."""

from __future__ import annotations

import csv
import json
import signal

import pytest

from helpers import finetune_job, interrupt_job_after_checkpoint, run_job_in_subprocess
from seqpeft.tasks.demo_data import generate_source
from seqpeft.tasks import tokenize_task
from seqpeft.training.launch import run_finetune
from seqpeft.config.settings import FinetuneJob

TRAINING = {"epochs": 4, "batch_size": 16, "learning_rate": 4e-3, "patience": 10, "evals_per_epoch": 3}


@pytest.fixture(scope="module")
def task(tmp_path_factory, tiny_model_dir):
    root = tmp_path_factory.mktemp("resume")
    generate_source({"synthetic": "dna", "seed": 5, "n_train": 480, "n_dev": 80, "n_test": 80, "length": 40}, root / "data")
    model_dir = tiny_model_dir("llama")
    tokenize_task({"kind": "sequence_classification"}, root / "data", model_dir, root / "cache.npz")
    return root, model_dir


def _spec(task, method, out_dir, head="seqpeft"):
    root, model_dir = task
    return finetune_job(root / "cache.npz", model_dir, out_dir, task="t", method=method, task_spec={}, training=TRAINING,
                        model_spec={"max_length": 64, "head": head}).to_dict()


def _history_without_time(run_dir):
    with open(run_dir / "history.csv") as handle:
        return [{k: v for k, v in row.items() if k != "wall_seconds"} for row in csv.DictReader(handle)]


def _interrupt(spec, run_dir, sig):
    return interrupt_job_after_checkpoint(spec, sig)


@pytest.mark.parametrize(("method", "sig", "head"), [("lora", signal.SIGTERM, "seqpeft"), ("adalora", signal.SIGKILL, "seqpeft"),
                                                     ("adalora_rs", signal.SIGTERM, "seqpeft"),
                                                     # the family's own head (seqpeft.models.hf_head): a SEQ_CLS peft model
                                                     ("adalora", signal.SIGTERM, "transformers")],
                         ids=["lora-sigterm", "adalora-sigkill", "adalora_rs-sigterm", "adalora-transformers-head-sigterm"])
def test_killed_run_resumes_to_identical_metrics(task, tmp_path, method, sig, head):
    reference = run_finetune(FinetuneJob.from_dict(_spec(task, method, tmp_path / "reference", head)))
    run_dir = tmp_path / "interrupted"
    output = _interrupt(_spec(task, method, run_dir, head), run_dir, sig)
    if sig == signal.SIGTERM:
        assert "checkpoint saved" in output
    resumed = run_job_in_subprocess(_spec(task, method, run_dir, head))
    assert "resuming from step" in resumed
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert metrics["test"] == reference["test"]
    assert metrics["dev"] == reference["dev"]
    assert metrics["best_step"] == reference["best_step"]
    assert _history_without_time(run_dir) == _history_without_time(tmp_path / "reference")
    assert not (run_dir / "checkpoint").exists()


def test_checkpoint_of_other_settings_is_not_resumed(task, tmp_path):
    run_dir = tmp_path / "run"
    _interrupt(_spec(task, "lora", run_dir), run_dir, signal.SIGKILL)
    changed = _spec(task, "lora", run_dir)
    changed["method_spec"] = {"r": 4}
    output = run_job_in_subprocess(changed)
    assert "discarding checkpoint" in output
    assert "resuming" not in output
