"""QLoRA for real on CPU (bitsandbytes 0.50 CPU backend): 4-bit linear layers, LoRA counts, training,
reload, on both of bitsandbytes' CPU inference paths (packed fused kernel where the CPU has
AVX512-BF16, plain dequantize-and-matmul everywhere)."""

from __future__ import annotations

import csv

import numpy as np
import pytest
import torch

from helpers import QLORA_TINY, TINY, assert_reloaded_run_predicts_its_test_accuracy, dev_losses, finetune_job, motif_task
from seqpeft.training.assemble import build_model
from seqpeft.training.launch import run_finetune


def _linear4bit(model) -> dict:
    import bitsandbytes as bnb

    return {name: module for name, module in model.named_modules() if isinstance(module, bnb.nn.Linear4bit)}


def test_qlora_backbone_is_4bit_nf4_with_lora_on_top(tiny_model_dir):
    model, _, _, loaded = build_model(tiny_model_dir("llama", **QLORA_TINY), {}, "qlora", {"r": 4}, 2, False,
                                      total_steps=10, model_name="llama")
    quantized = _linear4bit(model.backbone)
    assert len(quantized) == 2 * 7  # q, k, v, o, gate, up, down in both layers
    layer = next(iter(quantized.values()))
    assert layer.weight.quant_type == "nf4" and layer.weight.quant_state.nested  # double quantisation
    assert layer.compute_dtype == torch.bfloat16
    census = loaded.quantization.pop("parameters")  # which weights are 4-bit and which stayed float32
    assert loaded.quantization == {"quant_type": "nf4", "double_quant": True, "compute_dtype": "bfloat16",
                                   "quantized_layers": 14, "unquantized_layers": {}}
    assert census["by_kind"]["4bit"]["tensors"] == 14
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    # LoRA r=4: r x (in + out) on 4 attention (64->64) and 3 MLP projections (64<->128), 2 layers; head 64 x 2 + 2
    assert trainable == 2 * (4 * 4 * (64 + 64) + 3 * 4 * (64 + 128)) + 64 * 2 + 2


def test_layers_the_4bit_kernels_cannot_take_stay_unquantized_and_are_named(tiny_model_dir, bnb_cpu_path, capfd):
    """Widths 32 and 64: only down_proj (64 -> 32) fits the kernels. On an AVX512-BF16 CPU the others
    crashed in bitsandbytes' weight repacking at the first evaluation."""
    from seqpeft.methods import qlora

    model, _, _, loaded = build_model(tiny_model_dir("llama", **TINY), {}, "qlora", {"r": 4}, 2, False,
                                      total_steps=10, model_name="llama")
    assert sorted(_linear4bit(model.backbone)) == [f"base_model.model.layers.{i}.mlp.down_proj.base_layer" for i in (0, 1)]
    kept = loaded.quantization["unquantized_layers"]
    assert len(kept) == 12 and kept["layers.0.self_attn.q_proj"] == "32->32" and kept["layers.1.mlp.up_proj"] == "32->64"
    assert "12 of 14 Linear layers stay unquantized" in capfd.readouterr().err
    qlora.use_packed_cpu_kernel(model, True)  # as an inference-only load runs
    model.eval()
    tokens = loaded.tokenizer(["ACGTACGTTA", "ACG"], padding=True, return_tensors="pt")
    with torch.no_grad():
        logits = model(tokens["input_ids"], tokens["attention_mask"])
    assert torch.isfinite(logits).all()
    packed = [getattr(m.weight.quant_state, "packing_format_for_cpu", False) for m in _linear4bit(model).values()]
    assert all(packed) == (bnb_cpu_path == "packed")


def test_training_gradients_reach_through_4bit_layers_after_an_evaluation(tiny_model_dir, bnb_cpu_path):
    """An evaluation must not switch a training model's 4-bit layers to the packed kernel, which has
    no backward: the LoRA gradients of the first layer would silently lose the 4-bit layers' path."""
    torch.manual_seed(0)
    model, _, _, loaded = build_model(tiny_model_dir("llama", **QLORA_TINY), {}, "qlora", {"r": 4, "lora_dropout": 0.0},
                                      2, False, total_steps=10, model_name="llama")
    with torch.no_grad():
        for param in model.parameters():
            if param.requires_grad:
                param.add_(0.05 * torch.randn(param.shape))
    tokens = loaded.tokenizer(["ACGTACGTTA", "ACGGT"], padding=True, return_tensors="pt")

    def first_layer_gradients():
        model.train()
        model.zero_grad()
        torch.manual_seed(1)  # the head's dropout
        model(tokens["input_ids"], tokens["attention_mask"]).sum().backward()
        return {name: p.grad.clone() for name, p in model.named_parameters() if "layers.0." in name and p.grad is not None}

    before = first_layer_gradients()
    model.eval()
    with torch.no_grad():
        model(tokens["input_ids"], tokens["attention_mask"])
    after = first_layer_gradients()
    assert before.keys() == after.keys() and len(before) == 14  # lora_A and lora_B of 7 projections
    for name in before:
        torch.testing.assert_close(after[name], before[name], rtol=0, atol=0, msg=name)


def _probabilities(path) -> np.ndarray:
    with open(path) as handle:
        rows = list(csv.DictReader(handle))
    return np.array([[float(row[key]) for key in row if key.startswith("prob")] for row in rows])


def test_qlora_trains_reloads_and_predicts_alike_on_both_cpu_paths(tiny_model_dir, tmp_path, bnb_cpu_path, monkeypatch):
    from bitsandbytes.nn import modules as bnb_modules

    from seqpeft.training.evaluate import load_predictor, predict_file

    model_dir = tiny_model_dir("llama", **QLORA_TINY)
    motif_task(tmp_path, model_dir)
    training = {"epochs": 3, "batch_size": 32, "learning_rate": 1e-2, "patience": 3}
    metrics = run_finetune(finetune_job(tmp_path / "cache.npz", model_dir, tmp_path / "run", method="qlora", method_spec={"r": 4},
                                        training=training))
    census = metrics["quantization"].pop("parameters")
    assert metrics["quantization"] == {"quant_type": "nf4", "double_quant": True, "compute_dtype": "bfloat16",
                                       "quantized_layers": 14, "unquantized_layers": {}}
    # hidden 64, MLP 128, 2 layers: q, k, v, o (64 x 64) and gate, up, down (64 x 128) in 4 bits, two per byte
    assert census["by_kind"]["4bit"] == {"tensors": 14, "parameters": 2 * (4 * 64 * 64 + 3 * 64 * 128),
                                         "bytes": 4 * 64 * 64 + 3 * 64 * 128}
    kinds = {name.removeprefix("model."): entry["kind"] for name, entry in census["by_name"].items()}
    assert kinds["layers.*.self_attn.q_proj.weight"] == "4bit" and kinds["embed_tokens.weight"] == "float32"
    losses = dev_losses(tmp_path / "run")
    assert min(losses[1:]) < losses[0]
    test_csv = tmp_path / "data" / "test.csv"
    # The run evaluated its test split unpacked; this reload predicts on this test's path.
    assert_reloaded_run_predicts_its_test_accuracy(tmp_path / "run", test_csv, metrics, tmp_path)
    if bnb_cpu_path == "packed":
        # The same artifacts through the other path: equal within bf16 rounding of the 4-bit matmuls.
        packed = _probabilities(tmp_path / "pred.csv")
        monkeypatch.setattr(bnb_modules, "has_avx512bf16", lambda: False)
        predict_file(load_predictor(tmp_path / "run" / "artifacts"), test_csv, tmp_path / "unpacked.csv")
        np.testing.assert_allclose(packed, _probabilities(tmp_path / "unpacked.csv"), atol=2e-2, rtol=0)


def test_qlora_without_working_bitsandbytes_fails_at_once(tiny_model_dir, monkeypatch):
    import sys

    from seqpeft.util.errors import SeqpeftInputError

    monkeypatch.setitem(sys.modules, "bitsandbytes", None)  # as on a machine without it
    with pytest.raises(SeqpeftInputError, match="qlora needs bitsandbytes"):
        build_model(tiny_model_dir("llama"), {}, "qlora", {}, 2, False, total_steps=10, model_name="llama")


def test_qlora_settings_reach_the_layers_and_the_record(tiny_model_dir):
    """The Galaxy tutorial's 4-bit config: bitsandbytes' default fp4 with double quantisation; the
    LINGO QLoRA demo's: nf4 without it."""
    for quant_type, double_quant in (("fp4", True), ("nf4", False)):
        model, _, _, loaded = build_model(tiny_model_dir("llama", **QLORA_TINY), {}, "qlora",
                                          {"r": 4, "quant_type": quant_type, "double_quant": double_quant}, 2, False,
                                          total_steps=10, model_name="llama")
        layer = next(iter(_linear4bit(model.backbone).values()))
        assert layer.weight.quant_type == quant_type and bool(layer.weight.quant_state.nested) is double_quant
        assert (loaded.quantization["quant_type"], loaded.quantization["double_quant"]) == (quant_type, double_quant)
