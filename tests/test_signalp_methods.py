"""Adapters, deep prompts and last-N-layer LoRA on tiny models; residue alignment under prompts;
the SP objective under these methods with save -> load -> predict."""

from __future__ import annotations

import csv

import numpy as np
import pytest
import torch

from helpers import TINY, finetune_job
from seqpeft.data.readers import SP_TYPES
from seqpeft.data.signalp import read_signalp_fasta
from seqpeft.tasks.demo_data import generate_source
from seqpeft.methods.registry import MethodContext, resolve_method
from seqpeft.models.classifier import make_classifier
from seqpeft.models.families import FAMILIES, load_backbone
from seqpeft.tasks import tokenize_task
from seqpeft.training.launch import run_finetune

HIDDEN, LAYERS = TINY["hidden_size"], TINY["num_hidden_layers"]


def _apply(model_dir, method, spec=None, family="esm"):
    loaded = load_backbone(model_dir, {})
    registry_method, args = resolve_method(method, spec or {})
    loaded.backbone = registry_method.apply(loaded.backbone, args, MethodContext(FAMILIES[family], 10, "tiny"))
    return loaded


def _trainable(module) -> int:
    return sum(p.numel() for p in module.parameters() if p.requires_grad)


@pytest.mark.parametrize("family", ["esm", "bert", "llama"])
def test_adapter_parameter_count_and_identity_at_start(tiny_model_dir, family):
    model_dir = tiny_model_dir(family)
    base = load_backbone(model_dir, {}).backbone.eval()
    loaded = _apply(model_dir, "adapter", family=family)
    bottleneck = HIDDEN // 2
    # two adapters per block; each: LayerNorm 2h + down (h*b + b) + up (b*h + h)
    per_adapter = 2 * HIDDEN + HIDDEN * bottleneck + bottleneck + bottleneck * HIDDEN + HIDDEN
    assert _trainable(loaded.backbone) == LAYERS * 2 * per_adapter
    ids = torch.randint(4, 9, (2, 12))
    mask = torch.ones_like(ids)
    with torch.no_grad():
        expected = base(input_ids=ids, attention_mask=mask).last_hidden_state
        got = loaded.backbone.eval()(input_ids=ids, attention_mask=mask).last_hidden_state
    assert torch.allclose(expected, got, atol=1e-6)  # zero-init up-projection: the pretrained function


def test_deep_prompt_parameter_count(tiny_model_dir):
    loaded = _apply(tiny_model_dir("esm"), "deep_prompt", {"num_virtual_tokens": 5})
    assert _trainable(loaded.backbone) == LAYERS * 5 * HIDDEN


def test_lora_on_last_layers_only(tiny_model_dir):
    loaded = _apply(tiny_model_dir("esm"), "lora", {"r": 4, "layers_to_transform": [LAYERS - 1],
                                                    "target_modules": ["query", "value"]})
    names = [n for n, p in loaded.backbone.named_parameters() if p.requires_grad]
    assert names and all(f"layer.{LAYERS - 1}." in n for n in names)
    # r x h (A) + h x r (B) for query and value of one layer
    assert _trainable(loaded.backbone) == 2 * (4 * HIDDEN + HIDDEN * 4)


@pytest.mark.parametrize("method", ["prompt_tuning", "deep_prompt"])
def test_prompt_positions_do_not_shift_residue_labels(tiny_model_dir, method):
    """Label = "this residue is C": learnable from the residue's own position only if aligned.

    A logit sequence shifted by the 10 prompt positions would see unrelated residues and stay near
    chance (half the residues are C).
    """
    torch.manual_seed(0)
    loaded = _apply(tiny_model_dir("esm"), method, {"num_virtual_tokens": 10})
    model = make_classifier(loaded, 2, per_residue=True, dropout=0.0)
    rng = np.random.default_rng(0)
    sequences = ["".join(rng.choice(["A", "C"], 20)) for _ in range(64)]
    ids = torch.tensor(loaded.tokenizer(sequences)["input_ids"])
    assert ids.shape == (64, 22)  # [CLS] + 20 residues + [EOS]
    residue_is_c = torch.tensor([[letter == "C" for letter in s] for s in sequences]).long()
    labels = torch.cat([torch.full((64, 1), -100), residue_is_c, torch.full((64, 1), -100)], dim=1)
    mask = torch.ones_like(ids)
    optimizer = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=3e-2)
    for _ in range(40):
        logits = model(ids, mask)
        assert logits.shape[:2] == ids.shape
        loss = torch.nn.functional.cross_entropy(logits.reshape(-1, 2), labels.reshape(-1), ignore_index=-100)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    with torch.no_grad():
        predicted = model.eval()(ids, mask).argmax(-1)
    keep = labels != -100
    assert float((predicted[keep] == labels[keep]).float().mean()) > 0.95


@pytest.fixture(scope="module")
def sp_task(tmp_path_factory, tiny_model_dir):
    root = tmp_path_factory.mktemp("sp_methods")
    generate_source({"synthetic": "signalp", "seed": 2, "n_per_partition": 40}, root / "data")
    tokenize_task({"kind": "signal_peptide"}, root / "data" / "train_set.fasta", tiny_model_dir("esm"), root / "cache.npz")
    return root


@pytest.mark.parametrize("method", ["adapter", "deep_prompt", "prompt_tuning", "frozen"])
def test_sp_runs_train_the_crf_and_reload_for_predict(sp_task, tiny_model_dir, tmp_path, method):
    from seqpeft.training.evaluate import load_predictor, predict_file

    job = finetune_job(sp_task / "cache.npz", tiny_model_dir("esm"), tmp_path / "run", task="sp", model="tiny_esm",
                       method=method, partition="t0v1", kind="signal_peptide", model_spec={"max_length": 96},
                       training={"epochs": 2, "batch_size": 16, "learning_rate": 5e-3})
    metrics = run_finetune(job)
    # the CRF and the head train under every method, including frozen backbones
    assert metrics["trainable_params"] > 0
    test_records = [r for r in read_signalp_fasta(sp_task / "data" / "train_set.fasta") if r.partition == 0]
    fasta = tmp_path / "test.fasta"
    fasta.write_text("".join(f">{r.accession}\n{r.sequence}\n" for r in test_records))
    predict_file(load_predictor(tmp_path / "run" / "artifacts"), fasta, tmp_path / "pred.csv")
    with open(tmp_path / "pred.csv") as handle:
        rows = list(csv.DictReader(handle))
    assert all(row["prediction"] in SP_TYPES for row in rows)
    accuracy = np.mean([row["prediction"] == r.sp_type for row, r in zip(rows, test_records)])
    # reloaded artifacts reproduce the run's own test evaluation
    assert accuracy == pytest.approx(metrics["test"]["accuracy"], abs=1e-9)
