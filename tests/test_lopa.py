"""LoPA: parameter count, learning on the demo task, and identical predictions after reload."""

from __future__ import annotations

import torch

from helpers import assert_reloaded_run_predicts_its_test_accuracy, dev_losses, finetune_job, motif_task
from seqpeft.training.assemble import build_model
from seqpeft.training.launch import run_finetune


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
    model_dir = tiny_model_dir("llama")
    motif_task(tmp_path, model_dir)
    training = {"epochs": 4, "batch_size": 32, "learning_rate": 1e-2, "patience": 4}
    metrics = run_finetune(finetune_job(tmp_path / "cache.npz", model_dir, tmp_path / "run", method="lopa", training=training))
    m, r, d, h = 10, 1, 32, 64  # defaults on the tiny model: Z_S, u head, v head, then the 32 x 2 + 2 task head
    assert metrics["trainable_params"] == m * d + (d * h + h + h * m * r + m * r) + (d * h + h + h * d * r + d * r) + d * 2 + 2
    losses = dev_losses(tmp_path / "run")
    assert min(losses[1:]) < losses[0]
    assert (tmp_path / "run" / "artifacts" / "adapter" / "lopa.safetensors").is_file()
    assert_reloaded_run_predicts_its_test_accuracy(tmp_path / "run", tmp_path / "data" / "test.csv", metrics, tmp_path)
