"""The Snakemake workflow layer: dry runs, lint, config errors, profiles and rerun triggers.

These run Snakemake as a subprocess; none executes a rule's script, so they pass without the
library functions the scripts call. The network is made unreachable (proxies pointing at a
closed port, Hugging Face offline) so that any attempt to download fails the test.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml

from helpers import finish, job_stats, run, start
from seqpeft.config.jobs import expand_runs

ROOT = Path(__file__).resolve().parents[1]
FULL = ROOT / "config" / "config.yaml"
DEMO = ROOT / "config" / "demo.yaml"
RULES = ["download_source", "generate_demo_source", "derive_source", "build_tokenizer", "prepare_model", "tokenize", "tokenize_dsp",
         "tune_trials", "tune", "finetune", "aggregate", "pareto_figure", "mcc_over_time_figure", "signalp_table",
         "signalp_figures", "reproduction", "statistics", "rank_figure", "answer", "all"]
# the rules that only read results (rerunning answer.md reruns some of these, never a training job)
AGGREGATION = {"aggregate", "statistics", "rank_figure", "answer", "pareto_figure", "mcc_over_time_figure",
               "signalp_table", "signalp_figures", "reproduction", "all"}

def load(path: Path, results: Path) -> dict:
    config = yaml.safe_load(path.read_text())
    config["results"] = str(results)
    for spec in config["sources"].values():  # pre-staged data (the demo's ../shared) is relative to the checkout
        if (spec or {}).get("local"):
            spec["local"] = str(ROOT / spec["local"])
    return config


@pytest.fixture(scope="module", autouse=True)
def full_dry_run_process(tmp_path_factory):
    """Dry run of the full benchmark (~3.7k jobs, ~20 s on 2 cores): started before the first test
    of this module, in the background, and read by the last one."""
    results = tmp_path_factory.mktemp("full_results")
    process = start("-n", "--quiet", "all", "--configfile", FULL, "--config", f"results={results}")
    yield process, results
    if process.poll() is None:
        process.kill()
        process.communicate()


def test_demo_dry_run_lists_every_rule(tmp_path):
    code, out = run("-n", "--configfile", DEMO, "--config", f"results={tmp_path}")
    assert code == 0, out[-3000:]
    stats = job_stats(out)
    assert set(stats) == set(RULES) - {"download_source"}
    # demo_tf: 11 methods on llama, 3 on bert; lora, lora_dsp, lora_dsp_nt on the byte-level llama;
    # demo_marks (multi-label): 4 methods on llama and the 2 DSP variants; demo_sp: 5; the two SignalP-derived
    # protein tasks (classification, regression) x 3 on tiny ESM; demo_gc (DNA regression) x 3 on llama
    assert stats["finetune"] == len(expand_runs(load(DEMO, tmp_path))) == 11 + 3 + 3 + 4 + 2 + 5 + 2 * 3 + 3
    assert stats["tune_trials"] == 4 and stats["tune"] == 1  # lora_hpo's study on demo_tf: 4 trials, one job each
    assert stats["generate_demo_source"] == 4
    assert stats["derive_source"] == 2  # the protein tasks, from the real SignalP FASTA in ../shared
    assert stats["build_tokenizer"] == 3
    assert stats["prepare_model"] == 4
    assert stats["tokenize"] == 7  # one cache per task x tokenizer, shared by the two char-level DNA models
    assert stats["tokenize_dsp"] == 4  # one per task x model x DSP encoding
    assert stats["signalp_table"] == 1 and stats["signalp_figures"] == 1  # the one signal-peptide task
    assert stats["statistics"] == 1 and stats["answer"] == 1
    assert stats["rank_figure"] == 4 + 1  # a critical-difference diagram per model and one over all models
    # a --configfile replaces config/config.yaml instead of being merged into it
    assert "sources/gue" not in out and "download_source" not in out


@pytest.mark.parametrize("configfile", [FULL, DEMO], ids=["full", "demo"])
def test_lint_is_clean(configfile, tmp_path):
    code, out = run("--lint", "--configfile", configfile, "--config", f"results={tmp_path}")
    assert code == 0, out
    assert "Lints for" not in out, out
    assert "Congratulations, your workflow is in a good condition!" in out


def write_config(tmp_path: Path, config: dict) -> Path:
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path


def test_unknown_method_fails_with_key_path(tmp_path):
    config = load(DEMO, tmp_path / "results")
    config["experiments"][0]["methods"].append("lroa")
    code, out = run("-n", "--configfile", write_config(tmp_path, config))
    assert code != 0
    assert "experiments[0].methods: unknown method 'lroa'" in out
    assert "did you mean 'lora'?" in out
    assert "Traceback" not in out


def test_misspelt_top_level_key_fails_with_key_path(tmp_path):
    config = load(DEMO, tmp_path / "results")
    config["trainig"] = config.pop("training")
    code, out = run("-n", "--configfile", write_config(tmp_path, config))
    assert code != 0
    assert "trainig: unknown key" in out
    assert "did you mean 'training'?" in out
    assert "Failed validating" not in out  # one line, not the whole schema


def test_misspelt_nested_key_fails_with_key_path(tmp_path):
    config = load(DEMO, tmp_path / "results")
    config["methods"]["lora"]["training"] = {"learning_rat": 1e-3}
    code, out = run("-n", "--configfile", write_config(tmp_path, config))
    assert code != 0
    assert "methods.lora.training.learning_rat: unknown key" in out


@pytest.mark.parametrize("profile", ["local", "slurm"])
def test_profiles_parse(profile, tmp_path):
    # both profiles hide rule blocks (quiet: [rules, host]); --quiet host shows them, to read the resources
    code, out = run("-n", "--profile", ROOT / "profiles" / profile, "--quiet", "host", "--configfile", DEMO,
                    "--config", f"results={tmp_path}")
    assert code == 0, out[-3000:]
    assert job_stats(out)["finetune"] == len(expand_runs(load(DEMO, tmp_path)))
    if profile == "slurm":
        finetune = out[out.index("rule finetune:"):]
        finetune = finetune[:finetune.index("\n[")] if "\n[" in finetune else finetune
        assert "slurm_partition=gpu" in finetune
        assert "slurm_extra=--signal=TERM@300" in finetune


def test_multi_process_jobs_get_threads_and_memory_per_process(tmp_path):
    config = load(DEMO, tmp_path / "results")
    config["resources"] = {"finetune_threads": 3, "sizes": {"tiny": {"mem_mb": 1000}}}
    config["methods"]["lora"]["training"] = {"processes": 2}
    code, out = run("-n", "--cores", "16", "--until", "finetune", "--configfile", write_config(tmp_path, config))
    assert code == 0, out[-3000:]
    jobs = [job for job in out.split("\nrule ")[1:] if job.startswith("finetune:")]
    assert jobs
    for job in jobs:
        processes = 2 if "method=lora," in job else 1
        assert f"threads: {3 * processes}\n" in job, job
        assert f"mem_mb={1000 * processes}," in job, job


def outputs_of(dry_run: str) -> list[str]:
    files = []
    for line in dry_run.splitlines():
        if line.startswith("    output: "):
            files += [f.strip() for f in line[len("    output: "):].split(",")]
    return files


def test_reruns_follow_params_not_unrelated_edits(tmp_path):
    """With --rerun-triggers mtime params input (the profiles' setting), editing methods.lora.r
    reruns only the lora runs (and what aggregates them); unrelated edits and an up-to-date
    figure target rerun nothing."""
    results, workdir = tmp_path / "results", tmp_path / "work"
    workdir.mkdir()
    triggers = ["--rerun-triggers", "mtime", "params", "input"]
    config = load(DEMO, results)
    configfile = write_config(tmp_path, config)
    code, out = run("-n", "--configfile", configfile, workdir=workdir)
    assert code == 0, out[-3000:]
    for name in outputs_of(out):
        path = Path(name)
        if path.suffix:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.touch()
        else:
            path.mkdir(parents=True, exist_ok=True)
    code, out = run("--touch", "--forceall", "--cores", "1", "--configfile", configfile, workdir=workdir)
    assert code == 0, out[-3000:]

    code, out = run("-n", *triggers, "--configfile", configfile, workdir=workdir)
    assert code == 0 and "Nothing to be done" in out, out[-3000:]

    figure = results / "figures" / "demo_tf" / "pareto_params.png"
    code, out = run("-n", figure, *triggers, "--configfile", configfile, workdir=workdir)
    assert code == 0 and "Nothing to be done" in out, out[-3000:]

    # answer.md alone reruns from the tables; the statistics rerun their figures and the answer, no run
    code, out = run("-n", *triggers, "--forcerun", "answer", "--configfile", configfile, workdir=workdir)
    assert code == 0 and set(job_stats(out)) == {"answer", "all"}, out[-3000:]
    code, out = run("-n", *triggers, "--forcerun", "statistics", "--configfile", configfile, workdir=workdir)
    assert code == 0 and job_stats(out) == {"statistics": 1, "rank_figure": 5, "answer": 1, "all": 1}, out[-3000:]
    code, out = run("-n", *triggers, "--forcerun", "aggregate", "--configfile", configfile, workdir=workdir)
    assert code == 0 and set(job_stats(out)) <= AGGREGATION and "statistics" in job_stats(out), out[-3000:]

    unrelated = load(DEMO, results)
    unrelated["figures"]["pareto_axes"] = ["params"]
    unrelated["resources"]["finetune_threads"] = 2
    unrelated["methods"]["lora_r2"] = {"method": "lora", "r": 2}
    unrelated["resources"]["sizes"] = {"tiny": {"mem_mb": 8000, "runtime": 30}}
    code, out = run("-n", *triggers, "--configfile", write_config(tmp_path, unrelated), workdir=workdir)
    assert code == 0 and "Nothing to be done" in out, out[-3000:]

    changed = load(DEMO, results)
    changed["methods"]["lora"]["r"] = 4
    code, out = run("-n", *triggers, "--configfile", write_config(tmp_path, changed), workdir=workdir)
    assert code == 0, out[-3000:]
    stats = job_stats(out)
    # demo_tf x 3 DNA models, demo_marks and demo_gc x tiny_llama_dna, demo_sp and the 2 protein tasks x tiny_esm
    assert stats["finetune"] == 8
    assert {"build_tokenizer", "prepare_model", "tokenize", "tokenize_dsp", "generate_demo_source"}.isdisjoint(stats)
    rerun = re.findall(r"wildcards: task=(\w+), model=(\w+), method=(\w+), partition=(\w+)", out)
    assert {method for _, _, method, _ in rerun} == {"lora"}

    # a task's DSP domain reaches only its DSP caches and runs; a model's nucleotide ids only the
    # nucleotide-encoded ones
    changed = load(DEMO, results)
    changed["tasks"]["demo_tf"]["domain"] = "promoters"
    code, out = run("-n", *triggers, "--configfile", write_config(tmp_path, changed), workdir=workdir)
    assert code == 0, out[-3000:]
    assert {rule: n for rule, n in job_stats(out).items() if rule not in AGGREGATION} == {"tokenize_dsp": 2, "finetune": 2}
    rerun = re.findall(r"wildcards: task=(\w+), model=(\w+), method=(\w+), partition=(\w+)", out)
    assert {method for _, _, method, _ in rerun} == {"lora_dsp", "lora_dsp_nt"}
    changed = load(DEMO, results)
    changed["models"]["tiny_llama_bytes"]["dsp_nucleotide_ids"] = {"N": 0}
    code, out = run("-n", *triggers, "--configfile", write_config(tmp_path, changed), workdir=workdir)
    assert code == 0, out[-3000:]
    rerun = re.findall(r"wildcards: task=(\w+), model=(\w+), method=(\w+), partition=(\w+)", out)
    # demo_tf's and demo_marks' nucleotide-encoded caches and runs
    assert {method for _, _, method, _ in rerun} == {"lora_dsp_nt"} and job_stats(out)["tokenize_dsp"] == 2


# Last, so that the background dry run of the full benchmark overlaps the tests above.
def test_full_benchmark_dry_run_lists_every_rule_offline(full_dry_run_process):
    process, results = full_dry_run_process
    code, out = finish(process)
    assert code == 0, out[-3000:]
    stats = job_stats(out)
    expected = set(RULES) - {"generate_demo_source", "build_tokenizer"}  # hub models bring their own tokenizers
    expected -= {"tune_trials", "tune"}  # no run of the full benchmark sets training.hpo
    assert expected <= set(stats), stats
    assert all(stats[rule] > 0 for rule in expected)
    config = load(FULL, results)
    runs = expand_runs(config)
    # 28 GUE tasks x 3 replicates: 4 models x 11 methods, NT x 10 (no prefix tuning), 2 models x 2 DSP
    # variants; SignalP: 6 folds x 13; SP type and SP length: 3 replicates x 13
    assert stats["finetune"] == len(runs) == 28 * 3 * (4 * 11 + 10 + 2 * 2) + 6 * 13 + 2 * 3 * 13
    assert stats["derive_source"] == 2
    assert stats["tokenize_dsp"] == 28 * 2 * 2
    assert stats["download_source"] == 2  # GUE and SignalP; the alternative GUE zip is used by no task
    assert stats["prepare_model"] == len(config["models"])
    # the entries the shipped config leaves for `seqpeft pin`, one line each, on the dry run
    assert [line.split(":")[0] for line in out.splitlines() if line.startswith("unpinned ")] == [
        "unpinned model nucleotide_transformer", "unpinned model mistral_dna"]
    tasks = {run.task for run in runs}
    assert stats["pareto_figure"] == len(tasks) * 3
    assert stats["mcc_over_time_figure"] == len(tasks)
    assert stats["aggregate"] == 1
    assert not any(results.iterdir()), "a dry run must not write results"
