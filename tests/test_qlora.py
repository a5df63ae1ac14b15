"""QLoRA for real on CPU (bitsandbytes 0.50 CPU backend): 4-bit linear layers, LoRA counts, training, reload."""

from __future__ import annotations

import pytest

from helpers import assert_reloaded_run_predicts_its_test_accuracy, dev_losses, finetune_job, motif_task
from seqpeft.assemble import build_model
from seqpeft.launch import run_finetune


def test_qlora_backbone_is_4bit_nf4_with_lora_on_top(tiny_model_dir):
    import bitsandbytes as bnb
    import torch

    model, _, _, _ = build_model(tiny_model_dir("llama"), {}, "qlora", {"r": 4}, 2, False, total_steps=10, model_name="llama")
    quantized = {name for name, module in model.backbone.named_modules() if isinstance(module, bnb.nn.Linear4bit)}
    assert len(quantized) == 2 * 7  # q, k, v, o, gate, up, down in both layers
    layer = next(m for m in model.backbone.modules() if isinstance(m, bnb.nn.Linear4bit))
    assert layer.weight.quant_type == "nf4" and layer.weight.quant_state.nested  # double quantisation
    assert layer.compute_dtype == torch.bfloat16
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    # LoRA r=4: r x (in + out) on 4 attention (32->32) and 3 MLP projections (32<->64), 2 layers; head 32 x 2 + 2
    assert trainable == 2 * (4 * 4 * (32 + 32) + 3 * 4 * (32 + 64)) + 32 * 2 + 2


def test_qlora_trains_and_reloads_on_cpu(tiny_model_dir, tmp_path):
    model_dir = tiny_model_dir("llama")
    motif_task(tmp_path, model_dir)
    training = {"epochs": 3, "batch_size": 32, "learning_rate": 1e-2, "patience": 3}
    metrics = run_finetune(finetune_job(tmp_path / "cache.npz", model_dir, tmp_path / "run", method="qlora", method_spec={"r": 4},
                                        training=training))
    losses = dev_losses(tmp_path / "run")
    assert min(losses[1:]) < losses[0]
    assert_reloaded_run_predicts_its_test_accuracy(tmp_path / "run", tmp_path / "data" / "test.csv", metrics, tmp_path)


def test_qlora_without_working_bitsandbytes_fails_at_once(tiny_model_dir, monkeypatch):
    import sys

    from seqpeft.errors import SeqpeftInputError

    monkeypatch.setitem(sys.modules, "bitsandbytes", None)  # as on a machine without it
    with pytest.raises(SeqpeftInputError, match="qlora needs bitsandbytes"):
        build_model(tiny_model_dir("llama"), {}, "qlora", {}, 2, False, total_steps=10, model_name="llama")
