"""PEFT-SP's recipe knobs: optimizer by name, constant schedule, dropped top layers, LoRA on the
last N layers' attention, and the head + CRF training under LoRA (PEFT-SP leaves them random)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from helpers import TINY, finetune_job, motif_task
from seqpeft.tasks.demo_data import generate_source
from seqpeft.util.errors import SeqpeftInputError
from seqpeft.methods.registry import MethodContext, resolve_method
from seqpeft.models.families import FAMILIES, load_backbone
from seqpeft.config.recipe import last_layers, make_optimizer, make_scheduler
from seqpeft.tasks import tokenize_task
from seqpeft.training.launch import run_finetune

PEFT_SP_LORA = {"method": "lora", "r": 8, "lora_alpha": 8, "lora_dropout": 0.1,
                "target_modules": ["query", "key", "value", "attention.output.dense"]}


def test_optimizer_by_name_with_its_arguments():
    params = [torch.nn.Parameter(torch.zeros(3))]
    optimizer = make_optimizer("Adamax", {"eps": 1e-7}, params, 0.0067, 1.2e-6, fused=False)
    assert type(optimizer) is torch.optim.Adamax
    group = optimizer.param_groups[0]
    assert (group["lr"], group["weight_decay"], group["eps"]) == (0.0067, 1.2e-6, 1e-7)
    with pytest.raises(SeqpeftInputError, match="training.optimizer"):
        make_optimizer("Adamx", {}, params, 0.1, 0.0, fused=False)
    with pytest.raises(SeqpeftInputError, match="optimizer_args"):
        make_optimizer("Adamax", {"momentum": 0.9}, params, 0.1, 0.0, fused=False)
    scheduler = make_scheduler("constant", optimizer, 0, 100)
    for _ in range(50):
        optimizer.step()
        scheduler.step()
    assert optimizer.param_groups[0]["lr"] == pytest.approx(0.0067)  # no decay: PEFT-SP has no scheduler


def test_remove_top_layers_keeps_the_lower_layers(tiny_model_dir):
    model_dir = tiny_model_dir("esm")
    full = load_backbone(model_dir, {}).backbone
    cut = load_backbone(model_dir, {"remove_top_layers": 1}).backbone
    assert len(cut.encoder.layer) == TINY["num_hidden_layers"] - 1 == cut.seqpeft_layers
    for name, value in cut.state_dict().items():
        assert torch.equal(value, full.state_dict()[name])
    with pytest.raises(SeqpeftInputError, match="remove_top_layers"):
        load_backbone(model_dir, {"remove_top_layers": TINY["num_hidden_layers"]})
    # last_n_layers counts the checkpoint's layers (as PEFT-SP does); removed ones drop out
    top = TINY["num_hidden_layers"] - 1
    assert last_layers(cut, 2) == list(range(top - 1, top))
    with pytest.raises(SeqpeftInputError, match="last_n_layers"):
        last_layers(cut, 1)  # only the removed top layer


@pytest.mark.parametrize("last_n, expected_layers", [(1, [TINY["num_hidden_layers"] - 1]),
                                                      (33, list(range(TINY["num_hidden_layers"])))])
def test_lora_last_n_layers_in_attention_only(tiny_model_dir, last_n, expected_layers):
    loaded = load_backbone(tiny_model_dir("esm"), {})
    method, args = resolve_method("lora", {**PEFT_SP_LORA, "last_n_layers": last_n})
    backbone = method.apply(loaded.backbone, args, MethodContext(FAMILIES["esm"], 10, "tiny"))
    names = [n for n, p in backbone.named_parameters() if p.requires_grad]
    layers = sorted({int(n.split("layer.")[1].split(".")[0]) for n in names})
    assert layers == expected_layers
    assert all(".attention." in n for n in names)  # no feed-forward dense layers
    hidden = TINY["hidden_size"]
    assert len(names) == 2 * 4 * len(expected_layers)  # A and B of q, k, v, out_proj
    assert sum(p.numel() for p in backbone.parameters() if p.requires_grad) == len(expected_layers) * 4 * 2 * 8 * hidden


def test_peft_sp_recipe_trains_head_and_crf_under_lora(tmp_path, tiny_model_dir):
    generate_source({"synthetic": "signalp", "seed": 4, "n_per_partition": 20}, tmp_path / "data")
    tokenize_task({"kind": "signal_peptide"}, tmp_path / "data" / "train_set.fasta", tiny_model_dir("esm"), tmp_path / "cache.npz")
    training = {"epochs": 2, "batch_size": 20, "learning_rate": 0.007, "weight_decay": 1.2e-6, "optimizer": "Adamax",
                "scheduler": "constant", "warmup_ratio": 0.0, "max_grad_norm": 0.25}
    task = {"kind": "signal_peptide", "signal_peptide": {"labels": "regions", "region_regularization_alpha": 0.5}}
    job = finetune_job(tmp_path / "cache.npz", tiny_model_dir("esm"), tmp_path / "run", method="lora", partition="t0v1",
                       task_spec=task, model_spec={"max_length": 96, "remove_top_layers": 1},
                       method_spec={**PEFT_SP_LORA, "last_n_layers": 33}, training=training)
    metrics = run_finetune(job)
    recorded = metrics["training"]
    assert (recorded["optimizer"], recorded["scheduler"], recorded["max_grad_norm"]) == ("Adamax", "constant", 0.25)
    assert metrics["remove_top_layers"] == 1 and metrics["method_args"]["last_n_layers"] == 33
    assert metrics["signal_peptide"] == {"labels": "regions", "region_regularization_alpha": 0.5, "constraints": "hard"}
    crf = load_file(str(tmp_path / "run" / "artifacts" / "crf.safetensors"))
    assert any(float(value.abs().sum()) > 0 for value in crf.values())  # the CRF starts at zeros: it trained
    assert metrics["unchanged_from_init"] == {"head": False, "crf": False}
    from seqpeft.training.evaluate import load_predictor

    predictor = load_predictor(tmp_path / "run" / "artifacts")
    layers = [n for n, _ in predictor.model.backbone.named_modules() if n.endswith(("encoder.layer.0", "encoder.layer.1"))]
    assert len(layers) == TINY["num_hidden_layers"] - 1
    assert np.isfinite(metrics["test"]["selection"])


def _motif_job(tmp_path, model_dir, method_spec, training, name="run"):
    cache = motif_task(tmp_path / "task", model_dir, n_train=96, n_dev=48, n_test=32)
    return finetune_job(cache, model_dir, tmp_path / name, method="lora", method_spec=method_spec,
                        training={"batch_size": 16, "evals_per_epoch": 2, "device": "cpu", **training})


def test_select_on_loss_restores_the_lowest_dev_loss_and_stops_on_it(tmp_path, tiny_model_dir):
    import pandas as pd

    model_dir = tiny_model_dir("llama")
    # a learning rate high enough that dev loss and dev MCC peak at different evaluations
    training = {"epochs": 6, "learning_rate": 0.05, "patience": 100}
    best = {}
    for select_on in ("loss", "mcc"):
        job = _motif_job(tmp_path, model_dir, {"r": 4}, {**training, "select_on": select_on}, name=select_on)
        metrics = run_finetune(job)
        history = pd.read_csv(tmp_path / select_on / "history.csv")
        column, pick = ("dev_loss", "idxmin") if select_on == "loss" else ("dev_mcc", "idxmax")
        assert metrics["best_step"] == int(history.loc[getattr(history[column], pick)(), "step"])
        assert metrics["training"]["select_on"] == select_on
        best[select_on] = metrics["best_step"]
    assert best["loss"] != best["mcc"]  # the two criteria pick different evaluations here
    # early stopping follows the same score: patience 1 stops one evaluation after the best dev loss
    metrics = run_finetune(_motif_job(tmp_path, model_dir, {"r": 4}, {**training, "select_on": "loss", "patience": 1},
                                      name="stopped"))
    history = pd.read_csv(tmp_path / "stopped" / "history.csv")
    losses = history["dev_loss"].tolist()
    assert losses[-1] >= min(losses[:-1]) and metrics["best_step"] == int(history["step"].iloc[-2])
    with pytest.raises(SeqpeftInputError, match="select_on"):
        run_finetune(_motif_job(tmp_path, model_dir, {"r": 4}, {"select_on": "f1"}, name="bad"))


def test_train_head_false_leaves_the_head_at_its_random_initialisation(tmp_path, tiny_model_dir):
    from seqpeft.training.assemble import build_model

    model_dir = tiny_model_dir("llama")
    torch.manual_seed(0)  # the job's seed (training.seed 0 + partition 0), as train() seeds before building
    initial = build_model(model_dir, {"max_length": 64}, "lora", {"r": 4}, 2, False, 10)[0].head.state_dict()
    heads = {}
    for train_head in (False, True):
        metrics = run_finetune(_motif_job(tmp_path, model_dir, {"r": 4, "train_head": train_head},
                                          {"epochs": 1, "learning_rate": 0.01}, name=f"head_{train_head}"))
        assert metrics["train_head"] is train_head
        heads[train_head] = load_file(str(tmp_path / f"head_{train_head}" / "artifacts" / "head.safetensors"))
        lora = metrics["adapter_config"]
        assert (lora["peft_type"], lora["r"]) == ("LORA", 4) and lora["target_modules"]
        heads[(train_head, "trainable")] = metrics["trainable_params"]
    assert all(torch.equal(heads[False][k], initial[k]) for k in initial)  # untouched
    assert not all(torch.equal(heads[True][k], initial[k]) for k in initial)  # trained
    assert heads[(True, "trainable")] - heads[(False, "trainable")] == sum(t.numel() for t in initial.values())


def test_selection_score_is_what_runs_and_tuning_trials_maximise():
    from seqpeft.config.recipe import selection_score
    from seqpeft.training.tune import selection_value

    dev = {"mcc": 0.5, "loss": 0.3}
    assert selection_score(dev, "mcc") == selection_value(dev) == 0.5
    assert selection_score(dev, "loss") == selection_value(dev, "loss") == -0.3
    assert selection_score({**dev, "selection": 1.7}, "mcc") == 1.7  # the objective's own (signal peptides)
    with pytest.raises(SeqpeftInputError, match="select_on"):
        selection_score(dev, "f1")
