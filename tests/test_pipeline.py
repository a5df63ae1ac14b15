"""The demo DAG for real: data -> tokenize -> fine-tune -> aggregate -> figures, then reruns.

This is the README's first command (minus the install): one real Snakemake run of
config/demo.yaml on CPU, followed by what users rely on: an unchanged rerun does nothing, a
changed method argument reruns only that method's jobs, and one figure regenerates alone.
"""

from __future__ import annotations

import pandas as pd
import pytest
import yaml

from helpers import job_stats

pytestmark = pytest.mark.slow  # runs the demo DAG


def test_demo_writes_tables_and_figures_and_learns(demo_run):
    results, config = demo_run.results, demo_run.config
    summary = pd.read_csv(results / "summary.csv")
    expected_runs = sum(len(b["tasks"]) * len(b["models"]) * len(b["methods"]) for b in config["experiments"])
    assert len(summary) == expected_runs
    for column in ("task", "model", "method", "partition", "test_mcc", "test_accuracy", "trainable_params",
                   "total_params", "peak_memory_mb", "train_seconds"):
        assert column in summary.columns
    table = pd.read_csv(results / "table.csv")
    assert len(table) == expected_runs  # one partition per task in the demo
    for task in config["tasks"]:
        for name in ("pareto_params", "pareto_memory", "pareto_time", "mcc_over_time"):
            for ext in ("png", "svg"):
                assert (results / "figures" / task / f"{name}.{ext}").stat().st_size > 1000
    dna = summary[summary.task == "demo_tf"].set_index(["model", "method"])["test_mcc"]
    for model in ("tiny_llama_dna", "tiny_bert_dna"):
        assert dna[(model, "lora")] >= 0.5, dna
        assert dna[(model, "full")] >= 0.5, dna
    # the tuned LoRA (a deterministic study of 4 full-length trials) does at least as well as the hand-set one
    assert dna[("tiny_llama_dna", "lora_hpo")] >= dna[("tiny_llama_dna", "lora")], dna
    # the multi-label task: methods of the DNA task, and every label learnt by LoRA and full fine-tuning
    marks = summary[summary.task == "demo_marks"].set_index(["model", "method"])
    assert set(marks.index.get_level_values("method")) <= set(summary[summary.task == "demo_tf"].method)
    for method in ("lora", "full"):
        per_label = marks.loc[("tiny_llama_dna", method), ["test_mcc_label0", "test_mcc_label1", "test_mcc_label2"]]
        assert (per_label >= 0.5).all(), per_label
    assert marks["test_auroc"].notna().all() and (marks["task_kind"] == "multi_label_classification").all()
    frozen = summary[summary.method == "frozen"]
    assert (frozen.trainable_params < frozen.total_params / 50).all()
    # sequence-level protein tasks on real SignalP data (tiny ESM) and DNA regression, scored by their kind's score
    score = summary.set_index(["task", "method"])
    for task, kind, name in (("demo_sp_type", "sequence_classification", "mcc"), ("demo_sp_length", "regression",
                                                                                  "spearman")):
        assert (score.loc[task, "score"] == name).all() and (score.loc[task, "task_kind"] == kind).all()
        for method in ("lora", "full"):
            assert score.loc[(task, method), "test_score"] > score.loc[(task, "frozen"), "test_score"], score.loc[task]
    assert score.loc[("demo_sp_type", "lora"), "test_f1"] > 0  # macro F1 over the 6 SP types, beside MCC
    for method in ("lora", "full"):
        assert score.loc[("demo_gc", method), "test_spearman"] >= 0.5, score.loc["demo_gc"]
    assert (table.set_index("task").loc["demo_gc", "score"] == "spearman").all()
    signalp = pd.read_csv(results / "signalp_table.csv")
    assert set(signalp.method) == set(summary[summary.task == "demo_sp"].method)
    for name in ("signalp_mcc", "signalp_cleavage_w0"):
        assert (results / "figures" / "demo_sp" / f"{name}.png").stat().st_size > 1000


def test_unchanged_rerun_does_nothing(demo_run):
    output = demo_run.snakemake("-n")
    assert "Nothing to be done" in output, output[-2000:]


def test_changed_method_argument_reruns_only_that_method(demo_run, tmp_path):
    config = demo_run.config
    changed = {**config, "methods": {**config["methods"], "lora": {**config["methods"]["lora"], "r": 4}}}
    changed_path = tmp_path / "changed.yaml"
    changed_path.write_text(yaml.safe_dump(changed, sort_keys=False))
    jobs = job_stats(demo_run.snakemake("-n", config_path=changed_path))
    lora_runs = sum(len(b["tasks"]) * len(b["models"]) for b in config["experiments"] if "lora" in b["methods"])
    assert jobs.get("finetune") == lora_runs, jobs
    for upstream in ("generate_demo_source", "build_tokenizer", "prepare_model", "tokenize"):
        assert upstream not in jobs, jobs


def test_one_figure_regenerates_alone(demo_run):
    results = demo_run.results
    target = results / "figures" / "demo_tf" / "pareto_params.png"
    others = {p: p.stat().st_mtime_ns for p in results.rglob("*") if p.is_file() and p != target
              and ".snakemake" not in p.parts and p.name not in ("pareto_params.svg", "pareto_params.log")}
    target.unlink()
    demo_run.snakemake(target.relative_to(demo_run.workdir))
    assert target.is_file()
    changed = [p for p, mtime in others.items() if p.exists() and p.stat().st_mtime_ns != mtime]
    assert changed == [], changed


def test_demo_compares_its_runs_with_the_published_table(demo_run):
    results = demo_run.results
    table = pd.read_csv(results / "reproduction.csv", keep_default_na=False)
    summary = pd.read_csv(results / "summary.csv", dtype={"partition": str})
    run = summary[(summary.task == "demo_tf") & (summary.model == "tiny_llama_dna") & (summary.method == "lora")].iloc[0]
    lora = table[(table.task == "demo_tf") & (table.model == "tiny_llama_dna") & (table.method == "lora")].iloc[0]
    assert float(lora.reproduced_mean) == pytest.approx(run.test_mcc) and int(lora.reproduced_n) == 1
    assert str(lora.within) == str(abs(run.test_mcc - 0.95) <= 0.05)
    assert "tiny_opt_dna" not in set(table.model)  # a model the demo does not run
    assert set(table.task) == {"demo_tf", "demo_sp"}
    assert (results / "figures" / "reproduction.png").stat().st_size > 1000
    # Regenerating the comparison reruns nothing upstream.
    # (the target first: --forcerun takes every word up to the next option)
    jobs = job_stats(demo_run.snakemake((results / "reproduction.csv").relative_to(demo_run.workdir), "-n", "--forcerun", "reproduction"))
    assert jobs == {"reproduction": 1}, jobs


def test_demo_lora_artifact_loads_in_one_line_from_a_copy(demo_run, tmp_path, monkeypatch):
    """The demo's transformers-head model (tiny_llama_bytes): its LoRA artifacts, copied, load with
    peft's AutoPeftModelForSequenceClassification from another directory and give the
    probabilities of ``seqpeft predict``."""
    import csv
    import os
    import shutil
    import subprocess
    import sys

    import numpy as np
    import torch
    from peft import AutoPeftModelForSequenceClassification
    from transformers import AutoTokenizer

    assert demo_run.config["models"]["tiny_llama_bytes"]["head"] == "transformers"
    copied = tmp_path / "copy" / "artifacts"
    shutil.copytree(demo_run.results / "runs" / "demo_tf" / "tiny_llama_bytes" / "lora" / "0" / "artifacts", copied)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    with open(demo_run.results / "sources" / "demo_dna" / "test.csv") as handle:
        sequences = [row["sequence"][:length] for row, length in zip(csv.DictReader(handle), (50, 31, 44, 12, 50, 27))]
    (elsewhere / "in.csv").write_text("sequence\n" + "\n".join(sequences) + "\n")
    result = subprocess.run([sys.executable, "-m", "seqpeft.cli", "predict", "--model", str(copied), "--input", "in.csv",
                             "--output", "out.csv"], cwd=elsewhere, env={**os.environ, "HF_HUB_OFFLINE": "1"},
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    with open(elsewhere / "out.csv") as handle:
        expected = np.array([[float(v) for k, v in row.items() if k.startswith("prob_")] for row in csv.DictReader(handle)])

    model = AutoPeftModelForSequenceClassification.from_pretrained(str(copied / "adapter")).eval()
    batch = AutoTokenizer.from_pretrained(str(copied / "tokenizer"))(sequences, padding=True, return_tensors="pt")
    assert (batch["attention_mask"] == 0).any()
    with torch.no_grad():
        probabilities = torch.softmax(model(**batch).logits, dim=-1).numpy()
    np.testing.assert_allclose(probabilities, expected, atol=1e-5)
