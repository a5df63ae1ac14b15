"""AdaLoRA's budget really moves during training, and AdaLoRA + RS perturbs it reproducibly."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from helpers import assert_reloaded_run_predicts_its_test_accuracy, dev_losses, finetune_job, motif_task
from seqpeft.training.assemble import build_model

ROOT = Path(__file__).resolve().parents[1]
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


@pytest.mark.parametrize("restore", [True, False])
def test_rs_readmitted_triplets_restart_from_zero_as_lingo_s_code_unless_restored(tiny_model_dir, restore):
    # probability 1: every kept triplet is dropped and every pruned one re-admitted, so the outcome is exact
    torch.manual_seed(0)
    spec = {**SPEC, "rs_probability": 1.0, "rs_restore": restore}
    model, _, _, _ = build_model(tiny_model_dir("llama"), {}, "adalora_rs", spec, 2, False, total_steps=TOTAL_STEPS,
                                 model_name="llama")
    backbone = model.backbone
    values = {n: p for n, p in backbone.named_parameters() if "lora_E" in n}
    with torch.no_grad():
        for p in values.values():
            p.normal_()
    input_ids = torch.randint(4, 9, (4, 10), generator=torch.Generator().manual_seed(0))
    model(input_ids, torch.ones_like(input_ids)).sum().backward()
    allocator = backbone.base_model.rankallocator
    allocator.update_ipt(backbone)
    before = {n: p.detach().clone() for n, p in values.items()}
    pattern = allocator.mask_to_budget(backbone, SPEC["init_r"] * len(values) // 2)
    readmitted = 0
    for name, p in values.items():
        kept = torch.tensor(pattern[name])
        assert torch.all(p.detach().view(-1)[~kept] == 0)  # dropped: zero
        expected = before[name].view(-1)[kept] if restore else torch.zeros(int(kept.sum()))
        assert torch.equal(p.detach().view(-1)[kept], expected)
        readmitted += int(kept.sum())
    assert readmitted == SPEC["init_r"] * len(values) // 2  # exactly the pruned half came back


@pytest.mark.parametrize("every", [0, 1, 7])
def test_allocation_cadence_and_a_hard_coded_total_step(tiny_model_dir, every):
    """LINGO's DSP scripts allocate every 50 steps against total_step 7485, its train_opt125m.py never."""
    spec = {**SPEC, "allocate_every": every, "total_step": 7485, "tfinal": 200}
    model, method, _, _ = build_model(tiny_model_dir("llama"), {}, "adalora", spec, 2, False, total_steps=TOTAL_STEPS,
                                      model_name="llama")
    config = model.backbone.peft_config[model.backbone.active_adapter]
    assert (config.total_step, config.tfinal) == (7485, 200)  # not the run's 40 steps
    input_ids = torch.randint(4, 9, (4, 10), generator=torch.Generator().manual_seed(0))
    model(input_ids, torch.ones_like(input_ids)).sum().backward()  # importance needs gradients
    tuner = model.backbone.base_model
    called = []
    real = tuner.update_and_allocate
    tuner.update_and_allocate = lambda step: (called.append(step), real(step))
    for step in range(1, 22):
        method.after_optimizer_step(model.backbone, step)
    assert called == ([] if every == 0 else list(range(every, 22, every)))


def test_lingo_s_adalora_targets_give_the_notebook_s_trainable_count_on_opt_125m_shapes():
    """LINGO's DNA_llm_test.ipynb reports 1,183,200 trainable parameters for OPT-125M + AdaLoRA+RS
    (init_r 8): r x (in + out + 1) on q, k, v, fc1, fc2 of 12 layers is 1,180,128; the other 3,072
    are 2 x 768 x 2, OPT's bias-free 2-label score head counted twice (peft of the seed's time left
    the original of the modules_to_save copy trainable)."""
    import yaml
    from transformers import OPTConfig, OPTModel

    from seqpeft.methods.registry import MethodContext, resolve_method
    from seqpeft.models.families import FAMILIES

    spec = yaml.safe_load((ROOT / "config" / "seeds" / "lingo.yaml").read_text())["methods"]["adalora_rs"]
    config = OPTConfig(hidden_size=768, ffn_dim=3072, num_hidden_layers=12, num_attention_heads=12, vocab_size=50272,
                       word_embed_proj_dim=768, max_position_embeddings=2048)
    # a real (CPU) model: on the meta device peft re-creates AdaLoRA's constant ``ranknum`` as a trainable parameter
    backbone = OPTModel(config)
    method, args = resolve_method("adalora_rs", spec)
    wrapped = method.apply(backbone, args, MethodContext(FAMILIES["opt"], 20000, "opt_125m"))
    adapter = sum(p.numel() for p in wrapped.parameters() if p.requires_grad)
    assert adapter == 1_180_128
    assert adapter + 2 * 768 * 2 == 1_183_200
