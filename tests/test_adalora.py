"""AdaLoRA's budget really moves during training, and AdaLoRA + RS perturbs it reproducibly."""

from __future__ import annotations

import pytest
import torch

from helpers import assert_reloaded_run_predicts_its_test_accuracy, dev_losses, finetune_job, motif_task
from seqpeft.training.assemble import build_model

TOTAL_STEPS = 40
SPEC = {"init_r": 6, "target_r": 2, "tinit": 4, "tfinal": 10, "deltaT": 2}


def _train(model_dir, method: str, spec: dict, seed: int = 0) -> tuple[object, list[dict]]:
    """A plain training loop on random sequences; returns the model and the rank pattern per step."""
    torch.manual_seed(seed)
    model, method_obj, _, _ = build_model(model_dir, {}, method, spec, 2, False, total_steps=TOTAL_STEPS, model_name="llama")
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=1e-2)
    generator = torch.Generator().manual_seed(seed)
    patterns = []
    for step in range(1, TOTAL_STEPS + 1):
        input_ids = torch.randint(4, 9, (4, 10), generator=generator)
        labels = (input_ids == 5).sum(dim=1).gt(2).long()
        loss = torch.nn.functional.cross_entropy(model(input_ids, torch.ones_like(input_ids)), labels)
        loss = loss + method_obj.extra_loss(model.backbone)
        loss.backward()
        optimizer.step()
        method_obj.after_optimizer_step(model.backbone, step)
        optimizer.zero_grad(set_to_none=True)
        patterns.append(_active_ranks(model.backbone))
    return model, patterns


def _active_ranks(backbone) -> dict[str, tuple[bool, ...]]:
    return {name: tuple(bool(v) for v in (param.detach().view(-1) != 0)) for name, param in backbone.named_parameters()
            if "lora_E" in name}


def _modules(backbone) -> int:
    return sum(1 for name, _ in backbone.named_parameters() if "lora_E" in name)


@pytest.fixture(scope="module")
def adalora_run(tiny_model_dir):
    return _train(tiny_model_dir("llama"), "adalora", SPEC)


def test_adalora_ranks_change_during_training_and_end_at_the_target_budget(adalora_run):
    model, patterns = adalora_run
    modules = _modules(model.backbone)
    totals = [sum(sum(mask) for mask in pattern.values()) for pattern in patterns]
    assert totals[0] == SPEC["init_r"] * modules  # warm-up: nothing pruned yet
    assert totals[-1] == SPEC["target_r"] * modules  # final budget reached and held
    assert len(set(totals)) > 2  # the budget shrinks in several steps, not at once
    final = patterns[-1]
    assert len({sum(mask) for mask in final.values()}) > 1  # ranks are reallocated, not uniform
    config = model.backbone.peft_config[model.backbone.active_adapter]
    by_suffix = {name.removeprefix("base_model.model."): mask for name, mask in final.items()}
    assert {name: tuple(mask) for name, mask in config.rank_pattern.items()} == by_suffix
    assert patterns[-1] == patterns[-10]  # fixed during the final phase


def test_adalora_rs_masks_differ_from_adalora_and_are_reproducible(adalora_run, tiny_model_dir):
    _, plain = adalora_run
    rs_spec = {**SPEC, "rs_probability": 0.2, "rs_seed": 7}
    model_a, rs_a = _train(tiny_model_dir("llama"), "adalora_rs", rs_spec)
    _, rs_b = _train(tiny_model_dir("llama"), "adalora_rs", rs_spec)
    assert rs_a == rs_b
    assert rs_a[-1] != plain[-1]
    # before the first masking step both are the same model
    assert rs_a[0] == plain[0]
    allocator = model_a.backbone.base_model.rankallocator
    assert type(allocator).__name__ == "RandomSamplingRankAllocator" and allocator.probability == 0.2


def test_adalora_rs_with_probability_zero_is_plain_adalora(adalora_run, tiny_model_dir):
    _, plain = adalora_run
    _, rs = _train(tiny_model_dir("llama"), "adalora_rs", {**SPEC, "rs_probability": 0.0})
    assert rs == plain


def test_adalora_rs_run_counts_trains_and_reloads(tiny_model_dir, tmp_path):
    from seqpeft.training.launch import run_finetune

    model_dir = tiny_model_dir("llama")
    motif_task(tmp_path, model_dir)
    training = {"epochs": 4, "batch_size": 32, "learning_rate": 2e-2, "patience": 4}
    spec = {"init_r": 6, "target_r": 2}
    metrics = run_finetune(finetune_job(tmp_path / "cache.npz", model_dir, tmp_path / "run", method="adalora_rs", method_spec=spec,
                                        training=training))
    # tiny llama: hidden 32, MLP 64, 2 layers; SVD triplets r x (in + out + 1) on q,k,v,o (32->32),
    # gate, up (32->64), down (64->32); plus the 32 x 2 + 2 head
    per_layer = 4 * 6 * (32 + 32 + 1) + 3 * 6 * (32 + 64 + 1)
    assert metrics["trainable_params"] == 2 * per_layer + 32 * 2 + 2
    losses = dev_losses(tmp_path / "run")
    assert losses[-1] < losses[0]
    assert_reloaded_run_predicts_its_test_accuracy(tmp_path / "run", tmp_path / "data" / "test.csv", metrics, tmp_path)
