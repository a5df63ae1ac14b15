"""The demo DAG for real: data -> tokenize -> fine-tune -> aggregate -> figures, then reruns.

This is the README's first command (minus the install): one real Snakemake run of
config/demo.yaml on CPU, followed by what users rely on: an unchanged rerun does nothing, a
changed method argument reruns only that method's jobs, and one figure regenerates alone.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
DEMO = ROOT / "config" / "demo.yaml"
ENV = {**os.environ, "HF_HUB_OFFLINE": "1", "http_proxy": "http://127.0.0.1:9", "https_proxy": "http://127.0.0.1:9"}


def snakemake(*args, check=True) -> str:
    result = subprocess.run([sys.executable, "-m", "snakemake", "--profile", "profiles/local", "--cores", "2", *map(str, args)],
                            cwd=ROOT, env=ENV, capture_output=True, text=True, timeout=1200)
    if check and result.returncode != 0:
        pytest.fail(f"snakemake {' '.join(map(str, args))} failed:\n{result.stdout[-4000:]}\n{result.stderr[-4000:]}")
    return result.stdout + result.stderr


@pytest.fixture(scope="module")
def demo_results(tmp_path_factory):
    results = tmp_path_factory.mktemp("demo") / "results"
    config = yaml.safe_load(DEMO.read_text())
    config["results"] = str(results)
    config_path = results.parent / "demo.yaml"
    config_path.write_text(yaml.safe_dump(config, sort_keys=False))
    snakemake("--configfile", config_path)
    return results, config, config_path


def test_demo_writes_tables_and_figures_and_learns(demo_results):
    results, config, _ = demo_results
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
    frozen = summary[summary.method == "frozen"]
    assert (frozen.trainable_params < frozen.total_params / 50).all()


def _jobs_of_dry_run(output: str) -> dict[str, int]:
    counts, in_table = {}, False
    for line in output.splitlines():
        if line.startswith("job ") and "count" in line:
            in_table = True
            continue
        if in_table:
            parts = line.split()
            if not parts or parts[0].startswith("-"):
                continue
            if parts[0] == "total":
                break
            counts[parts[0]] = int(parts[1])
    return counts


def test_unchanged_rerun_does_nothing(demo_results):
    _, _, config_path = demo_results
    output = snakemake("-n", "--configfile", config_path)
    assert "Nothing to be done" in output, output[-2000:]


def test_changed_method_argument_reruns_only_that_method(demo_results, tmp_path):
    _, config, _ = demo_results
    changed = {**config, "methods": {**config["methods"], "lora": {**config["methods"]["lora"], "r": 4}}}
    changed_path = tmp_path / "changed.yaml"
    changed_path.write_text(yaml.safe_dump(changed, sort_keys=False))
    jobs = _jobs_of_dry_run(snakemake("-n", "--configfile", changed_path))
    lora_runs = sum(len(b["tasks"]) * len(b["models"]) for b in config["experiments"] if "lora" in b["methods"])
    assert jobs.get("finetune") == lora_runs, jobs
    for upstream in ("generate_demo_source", "build_tokenizer", "prepare_model", "tokenize"):
        assert upstream not in jobs, jobs


def test_one_figure_regenerates_alone(demo_results):
    results, _, config_path = demo_results
    target = results / "figures" / "demo_tf" / "pareto_params.png"
    others = {p: p.stat().st_mtime_ns for p in results.rglob("*") if p.is_file() and p != target
              and ".snakemake" not in p.parts and p.name != "pareto_params.svg"}
    target.unlink()
    snakemake(target, "--configfile", config_path)
    assert target.is_file()
    changed = [p for p, mtime in others.items() if p.exists() and p.stat().st_mtime_ns != mtime]
    assert changed == [], changed
