"""Artifacts in the Hugging Face ecosystem: under ``models.<name>.head: transformers`` a run's
LoRA adapter is a plain PEFT SEQ_CLS adapter that ``AutoPeftModelForSequenceClassification``
loads in one line, from a copied artifacts folder and another working directory, giving the
probabilities ``seqpeft predict`` gives; a full fine-tuning run's backbone loads with
``AutoModelForSequenceClassification``; the default head is unchanged; what the transformers
head cannot train is refused with the key and the fix."""

from __future__ import annotations

import csv
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from helpers import assert_reloaded_run_predicts_its_test_accuracy, finetune_job, motif_task
from seqpeft.util.errors import SeqpeftInputError
from seqpeft.training.launch import run_finetune

REPO = Path(__file__).resolve().parents[1]
ENV = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONPATH": os.pathsep.join(
    [str(REPO / "src"), *filter(None, [os.environ.get("PYTHONPATH")])])}
HEAD = {"max_length": 64, "head": "transformers"}
TRAINING = {"epochs": 1, "batch_size": 16, "learning_rate": 2e-3}
# different lengths, so that a batch of them is padded
SEQUENCES = ["ACGTACGTTTGACGATCGATCGGGCTA", "TTGACA", "GGGCCCAAATTTACGTACGTAGCTAGCTAGCATCGATCGATTTAA",
             "ACGT" * 9, "CATCATCATG"]


def seqpeft_predict(artifacts: Path, tmp: Path) -> np.ndarray:
    """``seqpeft predict``'s probabilities (a subprocess, as a user runs it) for SEQUENCES."""
    source = tmp / "sequences.csv"
    source.write_text("sequence\n" + "\n".join(SEQUENCES) + "\n")
    result = subprocess.run([sys.executable, "-m", "seqpeft.cli", "predict", "--model", str(artifacts),
                             "--input", str(source), "--output", str(tmp / "pred.csv")],
                            cwd=tmp, env=ENV, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    assert "LOAD REPORT" not in result.stderr, result.stderr  # the class's new head is no news (seqpeft.util.quiet)
    with open(tmp / "pred.csv") as handle:
        rows = list(csv.DictReader(handle))
    return np.array([[float(row[key]) for key in row if key.startswith("prob_")] for row in rows])


def padded_batch(tokenizer_dir: Path):
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(tokenizer_dir))
    batch = tokenizer(SEQUENCES, padding=True, return_tensors="pt")
    assert (batch["attention_mask"] == 0).any()  # really padded
    return batch


@pytest.fixture(scope="module")
def trained(tmp_path_factory, tiny_model_dir):
    """LoRA runs in transformers-head mode on a tiny BERT (pooler + classifier, the pooler absent
    from the checkpoint), a tiny Llama (last non-pad token, bias-free score) and a tiny ESM (its
    classification head, whose dense layer LoRA's "dense" target must leave to modules_to_save)."""
    root = tmp_path_factory.mktemp("hf_head")
    runs = {}
    for family in ("bert", "llama", "esm"):
        model_dir = tiny_model_dir(family)
        cache = motif_task(root / family, model_dir, n_train=96, n_dev=32, n_test=32)
        job = finetune_job(cache, model_dir, root / family / "lora", method="lora", method_spec={"r": 4},
                           model_spec=HEAD, training=TRAINING, model=f"tiny_{family}")
        runs[family] = (root / family / "lora", run_finetune(job))
    return runs


@pytest.mark.parametrize("family", ["bert", "llama", "esm"])
def test_copied_lora_artifact_loads_in_one_line_and_matches_seqpeft_predict(trained, family, tmp_path, monkeypatch):
    import torch
    from peft import AutoPeftModelForSequenceClassification, PeftModelForSequenceClassification

    run_dir, metrics = trained[family]
    description = json.loads((run_dir / "artifacts" / "seqpeft.json").read_text())
    assert description["head"] == "transformers" and metrics["head"] == "transformers"
    adapter_config = json.loads((run_dir / "artifacts" / "adapter" / "adapter_config.json").read_text())
    assert adapter_config["task_type"] == "SEQ_CLS" and "classifier" in adapter_config["modules_to_save"]
    assert Path(adapter_config["base_model_name_or_path"]).is_absolute()
    copied = tmp_path / "copied" / "artifacts"
    shutil.copytree(run_dir / "artifacts", copied)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")

    model = AutoPeftModelForSequenceClassification.from_pretrained(str(copied / "adapter"))
    assert isinstance(model, PeftModelForSequenceClassification)
    model.eval()
    batch = padded_batch(copied / "tokenizer")
    with torch.no_grad():
        probabilities = torch.softmax(model(**batch).logits, dim=-1).numpy()
    expected = seqpeft_predict(copied, elsewhere)
    assert probabilities.shape == expected.shape == (len(SEQUENCES), 2)
    np.testing.assert_allclose(probabilities, expected, atol=1e-5)
    # trained, not a random head: the one-line model differs from the base model's own
    base = model.get_base_model()
    with torch.no_grad(), model.disable_adapter():
        untrained = torch.softmax(base(**batch).logits, dim=-1).numpy()
    assert np.abs(untrained - probabilities).max() > 1e-3


@pytest.mark.parametrize("family, method", [("llama", "frozen"), ("llama", "ia3"), ("llama", "adalora"),
                                            ("bert", "prompt_tuning"), ("bert", "p_tuning")])
def test_other_methods_train_save_and_reload_in_the_mode(tmp_path, tiny_model_dir, family, method, monkeypatch):
    """frozen (head in head.safetensors, loaded by seqpeft), and peft methods beside LoRA, whose
    adapters load in one line too."""
    import torch
    from peft import AutoPeftModelForSequenceClassification

    model_dir = tiny_model_dir(family)
    cache = motif_task(tmp_path, model_dir, n_train=64, n_dev=16, n_test=16)
    metrics = run_finetune(finetune_job(cache, model_dir, tmp_path / "run", method=method, model_spec=HEAD,
                                        training=TRAINING))
    assert 0 < metrics["trainable_params"] < metrics["total_params"]
    assert_reloaded_run_predicts_its_test_accuracy(tmp_path / "run", tmp_path / "data" / "test.csv", metrics, tmp_path)
    artifacts = tmp_path / "run" / "artifacts"
    if method == "frozen":
        # a linear probe saves its head alone, not the whole model around it
        assert json.loads((artifacts / "seqpeft.json").read_text())["weights"] == "frozen"
        assert not (artifacts / "adapter").exists() and not (artifacts / "backbone").exists()
        assert (artifacts / "head.safetensors").is_file()
        return
    monkeypatch.chdir(tmp_path / "data")
    model = AutoPeftModelForSequenceClassification.from_pretrained(str(artifacts / "adapter")).eval()
    with torch.no_grad():
        probabilities = torch.softmax(model(**padded_batch(artifacts / "tokenizer")).logits, dim=-1).numpy()
    np.testing.assert_allclose(probabilities, seqpeft_predict(artifacts, tmp_path), atol=1e-5)


def test_trainable_parameters_count_the_head_once(trained):
    run_dir, metrics = trained["llama"]
    description = json.loads((run_dir / "artifacts" / "seqpeft.json").read_text())
    assert description["transformers_class"] == "LlamaForSequenceClassification"
    # LoRA weights + the bias-free score (hidden 32 x 2 labels), out of the base model + LoRA + one score
    from safetensors.torch import load_file

    adapter = load_file(str(run_dir / "artifacts" / "adapter" / "adapter_model.safetensors"))
    assert metrics["trainable_params"] == sum(t.numel() for t in adapter.values())
    assert "base_model.model.score.weight" in adapter and adapter["base_model.model.score.weight"].shape == (2, 32)


def test_full_fine_tuning_backbone_loads_with_auto_model(tmp_path, tiny_model_dir, monkeypatch):
    import torch
    from transformers import AutoModelForSequenceClassification

    model_dir = tiny_model_dir("llama")
    cache = motif_task(tmp_path, model_dir, n_train=64, n_dev=16, n_test=16)
    job = finetune_job(cache, model_dir, tmp_path / "full", method="full", model_spec=HEAD,
                       training={**TRAINING, "epochs": 1})
    run_finetune(job)
    copied = tmp_path / "copied"
    shutil.copytree(tmp_path / "full" / "artifacts", copied)
    monkeypatch.chdir(tmp_path / "data")
    model = AutoModelForSequenceClassification.from_pretrained(str(copied / "backbone")).eval()
    with torch.no_grad():
        probabilities = torch.softmax(model(**padded_batch(copied / "tokenizer")).logits, dim=-1).numpy()
    np.testing.assert_allclose(probabilities, seqpeft_predict(copied, tmp_path), atol=1e-5)


def test_default_head_is_seqpeft_own(tmp_path, tiny_model_dir):
    model_dir = tiny_model_dir("llama")
    cache = motif_task(tmp_path, model_dir, n_train=32, n_dev=16, n_test=16)
    metrics = run_finetune(finetune_job(cache, model_dir, tmp_path / "run", method="lora", method_spec={"r": 4},
                                        training={**TRAINING, "epochs": 1}))
    description = json.loads((tmp_path / "run" / "artifacts" / "seqpeft.json").read_text())
    assert metrics["head"] == description["head"] == "seqpeft" and "transformers_class" not in description
    adapter_config = json.loads((tmp_path / "run" / "artifacts" / "adapter" / "adapter_config.json").read_text())
    assert adapter_config["task_type"] == "FEATURE_EXTRACTION"
    assert description["pooling"] == "last"


@pytest.mark.parametrize("family, method, said", [
    ("llama", "prompt_tuning", "pools the last position"),
    ("llama", "lopa", "seqpeft's own wrapper"),
    ("dnabert2", "lora", "has no transformers sequence-classification class"),
    ("bert", "prefix_tuning", "needs a past_key_values argument"),
])
def test_what_the_transformers_head_cannot_train_is_refused(tmp_path, tiny_model_dir, family, method, said):
    model_dir = tiny_model_dir(family)
    cache = motif_task(tmp_path, model_dir, n_train=16, n_dev=8, n_test=8)
    job = finetune_job(cache, model_dir, tmp_path / "run", method=method, model_spec=HEAD, training=TRAINING,
                       model="mine")
    # the same job with the default head trains
    if family != "dnabert2":
        run_finetune(finetune_job(cache, model_dir, tmp_path / "default", method=method, training=TRAINING, model="mine"))
    with pytest.raises(SeqpeftInputError) as error:
        run_finetune(job)
    assert "models.mine.head" in str(error.value) and said in str(error.value)
    assert "head: seqpeft" in str(error.value)
    assert not (tmp_path / "run" / "artifacts").exists()


def test_signal_peptide_task_is_refused(tmp_path, tiny_model_dir):
    from seqpeft.models.hf_head import check_applicable
    from seqpeft.methods.registry import resolve_method

    method, _ = resolve_method("lora", {})
    with pytest.raises(SeqpeftInputError, match="models.esm_sp.head: transformers classifies whole sequences"):
        check_applicable("esm_sp", tiny_model_dir("esm"), HEAD, "lora", {}, method, per_residue=True)
