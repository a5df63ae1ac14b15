"""End-to-end checks against the real pretrained Mistral-DNA checkpoint in ../shared."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest

from helpers import finetune_job, shared_path

MODEL = "models/mistral-dna-v1-1m-hg38-tf0"


def test_evaluate_reproduces_published_run(tmp_path):
    """The published epoch-8 evaluation: loss 0.5378, accuracy 0.727, MCC 0.4548 on GUE tf/0 dev."""
    output = tmp_path / "m.json"
    result = subprocess.run(
        [sys.executable, "-m", "seqpeft.cli", "evaluate", "--model", str(shared_path(MODEL)),
         "--data", str(shared_path("data/gue/tf/0/dev.csv")), "--output", str(output)],
        capture_output=True, text=True, check=True,
    )
    assert "mcc" in result.stdout
    metrics = json.loads(output.read_text())
    state = json.loads((shared_path(MODEL) / "trainer_state.json").read_text())
    published = next(entry for entry in state["log_history"] if "eval_loss" in entry and entry.get("epoch") == 8.0)
    assert metrics["loss"] == pytest.approx(published["eval_loss"], abs=0.0015)
    assert metrics["accuracy"] == pytest.approx(published["eval_accuracy"], abs=0.003)
    assert metrics["mcc"] == pytest.approx(published["eval_matthews_correlation"], abs=0.005)


def _slice_csv(source, destination, rows, seed):
    lines = source.read_text().splitlines()
    header, body = lines[0], lines[1:]
    picked = np.random.default_rng(seed).choice(len(body), size=rows, replace=False)
    destination.write_text("\n".join([header] + [body[i] for i in sorted(picked)]) + "\n")


@pytest.mark.slow
def test_lora_on_real_backbone_beats_frozen_baseline(tmp_path):
    from seqpeft.tasks import tokenize_task
    from seqpeft.training.launch import run_finetune

    model_dir = shared_path(MODEL)
    data = tmp_path / "prom_core_all"
    data.mkdir()
    for split, rows in (("train", 3000), ("dev", 600), ("test", 1000)):
        _slice_csv(shared_path(f"data/gue/prom/prom_core_all/{split}.csv"), data / f"{split}.csv", rows, seed=len(split))
    cache = tmp_path / "cache.npz"
    tokenize_task({"kind": "sequence_classification"}, data, model_dir, cache)
    training = {"epochs": 4, "batch_size": 32, "learning_rate": 2e-3, "patience": 4}
    scores = {}
    for method, spec in (("frozen", {}), ("lora", {"r": 8, "lora_alpha": 16})):
        metrics = run_finetune(finetune_job(cache, model_dir, tmp_path / method, task="prom_core_all", model="mistral_dna",
                                            method=method, model_spec={"max_length": 128}, method_spec=spec,
                                            training=training, threads=2))
        scores[method] = metrics["test"]["mcc"]
        assert (tmp_path / method / "artifacts" / "seqpeft.json").is_file()
    assert scores["lora"] > scores["frozen"] + 0.02, scores
