"""config/seeds/peft_sp.yaml: a Snakemake dry run lists exactly PEFT-SP's job matrix (ESM-2 150M /
650M / 3B x LoRA, prompt tuning, adapter, full fine-tuning x as published and _fixed x 6 folds)
with PEFT-SP's settings."""

from __future__ import annotations

import itertools
import re
from pathlib import Path

import yaml

from helpers import job_stats, run

ROOT = Path(__file__).resolve().parents[1]
SEED = ROOT / "config" / "seeds" / "peft_sp.yaml"
FOLDS = ["t0v1", "t0v2", "t1v0", "t1v2", "t2v0", "t2v1"]
SIZES = {"esm2_150m": "150m", "esm2_650m": "650m", "esm2_3b": "3b"}


def test_dry_run_lists_exactly_the_peft_sp_matrix(tmp_path):
    code, out = run("-n", "all", "--configfile", SEED, "--config", f"results={tmp_path / 'results'}")
    assert code == 0, out[-3000:]
    assert job_stats(out)["finetune"] == 144
    jobs = [job for job in out.split("\nrule ")[1:] if job.startswith("finetune:")]
    listed = set()
    for job in jobs:
        wildcards = dict(re.findall(r"(\w+)=([^,\s]+)", re.search(r"wildcards: (.*)", job).group(1)))
        listed.add((wildcards["model"], wildcards["method"], wildcards["partition"]))
        resources = re.search(r"resources: (.*)", job).group(1)
        if wildcards["model"] == "esm2_3b":  # one 80 GB GPU
            assert "gpu=1," in resources and "gpu_model=a100_80gb," in resources, resources
    expected = {(model, f"{method}_{size}{fixed}", fold) for (model, size), method, fixed, fold
                in itertools.product(SIZES.items(), ["lora", "prompt_tuning", "adapter", "full"], ["", "_fixed"], FOLDS)}
    assert listed == expected


def test_settings_are_peft_sp_s():
    config = yaml.safe_load(SEED.read_text())
    training = config["training"]
    assert (training["optimizer"], training["weight_decay"], training["max_grad_norm"]) == ("Adamax", 1.2e-6, 0.25)
    assert (training["scheduler"], training["warmup_ratio"], training["batch_size"], training["epochs"]) == ("constant", 0.0, 20, 3)
    assert config["tasks"]["signalp"]["signal_peptide"] == {"labels": "regions", "region_regularization_alpha": 0.5}
    methods = config["methods"]
    for size, lr, layers in (("150m", 0.005, 25), ("650m", 0.007493, 33), ("3b", 0.006721, 35)):
        lora = methods[f"lora_{size}"]
        assert (lora["r"], lora["lora_alpha"], lora["lora_dropout"], lora["last_n_layers"]) == (8, 8, 0.1, layers)
        assert lora["training"]["learning_rate"] == lr
        assert lora["target_modules"] == ["query", "key", "value", "attention.output.dense"]
        assert lora["train_head"] is False and methods[f"lora_{size}_fixed"]["train_head"] is True
        for method in ("lora", "prompt_tuning", "adapter", "full"):
            published, fixed = methods[f"{method}_{size}"], methods[f"{method}_{size}_fixed"]
            assert published["signal_peptide"] == {"constraints": "soft"} and fixed["signal_peptide"] == {"constraints": "hard"}
            assert {k: v for k, v in fixed.items() if k not in ("train_head", "signal_peptide")} == \
                {k: v for k, v in published.items() if k not in ("train_head", "signal_peptide")}
            if method != "lora":
                assert published.get("train_head", True) and fixed.get("train_head", True)
    assert training["precision"] == "fp32" and not any("precision" in m.get("training", {}) for m in methods.values())
    assert not any("remove_top_layers" in model for model in config["models"].values())  # dead code in PEFT-SP
    assert "fedc350b8e0e3e4a6b45f62f5b67cdd920a25e42" in config["sources"]["signalp"]["url"]
