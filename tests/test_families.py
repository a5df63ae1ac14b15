"""Family registry details that the generic method tests do not see."""

from __future__ import annotations

from seqpeft.train import build_model


def test_mixtral_lora_adapts_the_fused_expert_weights(tiny_model_dir):
    model, _, _, _ = build_model(tiny_model_dir("mixtral"), {}, "lora", {"r": 2}, 2, False, total_steps=10, model_name="mixtral")
    names = [name for name, p in model.backbone.named_parameters() if p.requires_grad]
    assert any("mlp.experts" in name and "lora_A" in name for name in names)
    # tiny Mixtral: hidden 32, MLP 64, 4 experts, 2 layers; LoRA r=2 on q,k,v,o (32->32) and per expert on
    # gate_up (32->128) and down (64->32), stacked as r*experts; head 32 x 2 + 2
    r, experts = 2, 4
    per_layer = 4 * r * (32 + 32) + r * experts * (32 + 128) + r * experts * (64 + 32)
    assert sum(p.numel() for p in model.parameters() if p.requires_grad) == 2 * per_layer + 32 * 2 + 2
