"""LoPA: parameter count, learning on the demo task, and identical predictions after reload."""

from __future__ import annotations

import csv

import numpy as np
import pytest
import torch

from seqpeft.demo_data import generate_source
from seqpeft.tokenize import tokenize_task
from seqpeft.train import FinetuneJob, build_model, run_finetune


def test_lopa_prompt_depends_on_the_input_and_has_the_low_rank_gate(tiny_model_dir):
    model, _, _, _ = build_model(tiny_model_dir("llama"), {}, "lopa", {"num_virtual_tokens": 5, "lp_rank": 2}, 2, False,
                                 total_steps=10, model_name="llama")
    lopa = model.backbone
    lopa.eval()
    ids = torch.tensor([[4, 5, 6, 7, 0], [7, 7, 6, 5, 4]])
    with torch.no_grad():
        lopa.shared_prompt.fill_(1.0)  # the prompt is then the gate σ(u vᵀ) itself
    embeds = lopa.backbone.get_input_embeddings()(ids)
    prompt = lopa.prompt(embeds, torch.tensor([[1, 1, 1, 1, 0], [1, 1, 1, 1, 1]]))
    assert prompt.shape == (2, 5, 32)
    assert not torch.allclose(prompt[0], prompt[1])
    gate = prompt.detach()
    assert torch.all((gate > 0) & (gate < 1))
    logit = torch.logit(gate[0].double())  # u vᵀ: rank at most lp_rank
    assert torch.linalg.matrix_rank(logit, atol=1e-4) <= 2


def test_lopa_counts_trains_and_reloads(tiny_model_dir, tmp_path):
    from seqpeft.evaluate import load_predictor, predict_file

    model_dir = tiny_model_dir("llama")
    generate_source({"synthetic": "dna", "seed": 3, "n_train": 400, "n_dev": 64, "n_test": 64, "length": 40, "motif_copies": 2},
                    tmp_path / "data")
    tokenize_task({"kind": "sequence_classification"}, tmp_path / "data", model_dir, tmp_path / "cache.npz")
    training = {"epochs": 4, "batch_size": 32, "learning_rate": 1e-2, "patience": 4}
    metrics = run_finetune(FinetuneJob("demo", "tiny", "lopa", "0", {}, {"max_length": 64}, {}, training,
                                       tmp_path / "cache.npz", model_dir, tmp_path / "run", threads=1))
    m, r, d, h = 10, 1, 32, 64  # defaults on the tiny model: Z_S, u head, v head, then the 32 x 2 + 2 task head
    assert metrics["trainable_params"] == m * d + (d * h + h + h * m * r + m * r) + (d * h + h + h * d * r + d * r) + d * 2 + 2
    with open(tmp_path / "run" / "history.csv") as handle:
        losses = [float(row["dev_loss"]) for row in csv.DictReader(handle)]
    assert min(losses[1:]) < losses[0]
    assert (tmp_path / "run" / "artifacts" / "adapter" / "lopa.safetensors").is_file()
    predict_file(load_predictor(tmp_path / "run" / "artifacts"), tmp_path / "data" / "test.csv", tmp_path / "pred.csv")
    with open(tmp_path / "pred.csv") as handle:
        predictions = np.array([int(row["prediction"]) for row in csv.DictReader(handle)])
    with open(tmp_path / "data" / "test.csv") as handle:
        labels = np.array([int(row["label"]) for row in csv.DictReader(handle)])
    assert float(np.mean(predictions == labels)) == pytest.approx(metrics["test"]["accuracy"], abs=1e-9)
