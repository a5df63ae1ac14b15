"""Family registry details that the generic method tests do not see."""

from __future__ import annotations

import pytest
import torch
from peft.utils.constants import TRANSFORMERS_MODELS_TO_LORA_TARGET_MODULES_MAPPING
from transformers import AutoModel, AutoTokenizer, DistilBertConfig, GPT2Config

from seqpeft.util.errors import SeqpeftInputError
from seqpeft.models.families import FAMILIES
from seqpeft.training.assemble import build_model


def test_mixtral_lora_adapts_the_fused_expert_weights(tiny_model_dir):
    model, _, _, _ = build_model(tiny_model_dir("mixtral"), {}, "lora", {"r": 2}, 2, False, total_steps=10, model_name="mixtral")
    names = [name for name, p in model.backbone.named_parameters() if p.requires_grad]
    assert any("mlp.experts" in name and "lora_A" in name for name in names)
    # tiny Mixtral: hidden 32, MLP 64, 4 experts, 2 layers; LoRA r=2 on q,k,v,o (32->32) and per expert on
    # gate_up (32->128) and down (64->32), stacked as r*experts; head 32 x 2 + 2
    r, experts = 2, 4
    per_layer = 4 * r * (32 + 32) + r * experts * (32 + 128) + r * experts * (64 + 32)
    assert sum(p.numel() for p in model.parameters() if p.requires_grad) == 2 * per_layer + 32 * 2 + 2


def _unregistered_model(tmp_path, tiny_model_dir, config):
    """A tiny model of a type seqpeft has no family for, with the project's nucleotide tokenizer."""
    AutoModel.from_config(config).save_pretrained(tmp_path)
    AutoTokenizer.from_pretrained(str(tiny_model_dir("llama"))).save_pretrained(tmp_path)
    return tmp_path


def test_unregistered_model_type_falls_back_to_peft_default_targets(tmp_path, tiny_model_dir):
    assert not any(family.model_type == "gpt2" for family in FAMILIES.values())
    model_dir = _unregistered_model(tmp_path, tiny_model_dir, GPT2Config(vocab_size=10, n_embd=32, n_layer=2, n_head=4,
                                                                          n_positions=128, pad_token_id=0))
    model, _, _, loaded = build_model(model_dir, {}, "lora", {"r": 2}, 2, False, total_steps=10, model_name="gpt2")
    assert loaded.family.peft_defaults and model.pooling == "last"  # transformers knows GPT-2 only as a causal LM
    adapted = {name.rsplit(".", 1)[-1] for name, module in model.backbone.named_modules() if hasattr(module, "lora_A")}
    assert adapted == set(TRANSFORMERS_MODELS_TO_LORA_TARGET_MODULES_MAPPING["gpt2"])
    ids = torch.tensor([[1, 5, 6, 2]])
    model(ids, torch.ones_like(ids)).sum().backward()


def test_unregistered_model_type_without_peft_defaults_lists_its_modules(tmp_path, tiny_model_dir):
    model_dir = _unregistered_model(tmp_path, tiny_model_dir, DistilBertConfig(vocab_size=10, dim=32, n_layers=2, n_heads=4,
                                                                                hidden_dim=64, max_position_embeddings=128))
    with pytest.raises(SeqpeftInputError, match="'distilbert' has no family.*no default target modules") as error:
        build_model(model_dir, {}, "lora", {}, 2, False, total_steps=10, model_name="distilbert")
    assert "'q_lin'" in str(error.value) and "set target_modules" in str(error.value)
    model, _, _, _ = build_model(model_dir, {}, "lora", {"target_modules": ["q_lin", "v_lin"]}, 2, False, total_steps=10)
    assert model.pooling == "first"
