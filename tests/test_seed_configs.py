"""The seed configs (config/seeds/*.yaml): a dry run of each lists exactly its seed's experiment
matrix, and each, with its models swapped for tiny config-built ones and its data for a small
local copy (an overlay written from the seed file), runs a fine-tuning job whose metrics.json
records the seed's recipe as it reached the job."""

from __future__ import annotations

import itertools
import json
import re
from pathlib import Path

import pytest
import yaml
from safetensors.torch import load_file

from helpers import QLORA_TINY, TINY, job_stats, run, demo_config

ROOT = Path(__file__).resolve().parents[1]
SEEDS = ROOT / "config" / "seeds"
EMP = ["emp_h3", "emp_h3k14ac", "emp_h3k36me3", "emp_h3k4me1", "emp_h3k4me2", "emp_h3k4me3", "emp_h3k79me3",
       "emp_h3k9ac", "emp_h4", "emp_h4ac"]
PROM = ["prom_300_all", "prom_300_notata", "prom_300_tata", "prom_core_all", "prom_core_notata", "prom_core_tata"]
REPLICATES = ["0", "1", "2"]


def listed_finetune_jobs(out: str) -> list[tuple[str, str, str, str]]:
    jobs = []
    for job in out.split("\nrule ")[1:]:
        if job.startswith("finetune:"):
            wildcards = dict(re.findall(r"(\w+)=([^,\s]+)", re.search(r"wildcards: (.*)", job).group(1)))
            jobs.append((wildcards["task"], wildcards["model"], wildcards["method"], wildcards["partition"]))
    return jobs


def dry_run(name: str, tmp_path: Path) -> str:
    code, out = run("-n", "all", "--configfile", SEEDS / f"{name}.yaml", "--config", f"results={tmp_path / 'results'}")
    assert code == 0, out[-3000:]
    return out


def test_galaxy_dry_run_lists_exactly_the_tutorial_s_runs(tmp_path):
    out = dry_run("galaxy_mistral_dna", tmp_path)
    jobs = listed_finetune_jobs(out)
    assert len(jobs) == len(set(jobs)) == job_stats(out)["finetune"]
    assert set(jobs) == {*itertools.product(["tf_0"], ["mistral_dna"], ["qlora_galaxy", "qlora_galaxy_fixed"], REPLICATES),
                         *itertools.product(["tf_0"], ["mistral_dna_1m"], ["full"], REPLICATES)}


def test_lingo_dry_run_lists_exactly_the_seed_s_support_matrix(tmp_path):
    out = dry_run("lingo", tmp_path)
    jobs = listed_finetune_jobs(out)
    tasks = EMP + PROM
    expected = {  # as published on OPT-125M (the seed's AdaLoRA code), _fixed on the whole support matrix
        *itertools.product(tasks, ["nt_1000g_500m", "dnabert2", "opt_125m", "llama2_7b_32k"],
                           ["lora", "adalora_fixed", "adalora_rs_fixed"], REPLICATES),
        *itertools.product(tasks, ["opt_125m"], ["adalora", "adalora_rs", "adalora_rs_dsp", "adalora_rs_dsp_nt",
                                                 "adalora_rs_dsp_nt_fixed"], REPLICATES),
        *itertools.product(tasks, ["nt_1000g_500m", "dnabert2", "opt_125m"], ["adalora_rs_dsp_fixed"], REPLICATES),
        *itertools.product(["emp_h3"], ["llama2_7b_32k"], ["qlora"], REPLICATES),
    }
    assert len(jobs) == len(set(jobs)) == job_stats(out)["finetune"] == 963
    assert set(jobs) == expected
    # DSP inputs per task x model x encoding: BBPE on three models, nucleotide ids on OPT
    assert job_stats(out)["tokenize_dsp"] == len(tasks) * 4


# ---- the recipes reach the job ----

# per seed: the runs to make (task, model, method, partition), and the tiny model of each family
TINY_RUNS = {
    "galaxy_mistral_dna": [("tf_0", "mistral_dna", "qlora_galaxy", "0")],
    # QLoRA (quantization, select_on loss, the block's max_length) and AdaLoRA+RS with one-hot DSP
    "lingo": [("emp_h3", "llama2_7b_32k", "qlora", "0"), ("prom_300_all", "opt_125m", "adalora_rs_dsp_nt", "0")],
    "peft_sp": [("signalp", "esm2_650m", "lora_650m", "t0v1")],
}
TOKENIZERS = {"nucleotide": {"kind": "nucleotide"}, "esm": {"kind": "esm"}, "bytes_dna": {"kind": "bytes", "dna_merges": True}}
TOKENIZER_OF = {"llama": "bytes_dna", "opt": "bytes_dna", "mixtral": "nucleotide", "esm": "esm", "dnabert2": "nucleotide"}
# bitsandbytes' 4-bit kernels take these widths (seqpeft.methods.qlora.kernels_accept)
BUILD_OF = {"mixtral": {**TINY, **QLORA_TINY, "num_local_experts": 2, "num_experts_per_tok": 1},
            "llama": {**TINY, **QLORA_TINY}, "opt": TINY, "esm": {**TINY, "hidden_size": 64, "intermediate_size": 128},
            "dnabert2": TINY}
# enough training sequences for the recipe's own schedule to fit (AdaLoRA+RS: tinit + tfinal = 400 steps)
N_TRAIN = {"galaxy_mistral_dna": 48, "lingo": 660, "peft_sp": 40}


def tiny_overlay(name: str, tmp_path: Path) -> Path:
    """The seed config with hub models replaced by tiny config-built ones of the same family (every
    other model key kept), local tiny data in place of the downloads, CPU, one matrix block per run."""
    from seqpeft.tasks.demo_data import generate_source

    config = yaml.safe_load((SEEDS / f"{name}.yaml").read_text())
    config["results"] = str(tmp_path / "results")
    config["published"] = None
    runs = TINY_RUNS[name]
    for source_name, source in config["sources"].items():
        local = tmp_path / "data" / source_name
        for task, spec in config["tasks"].items():
            if spec["source"] != source_name or task not in {run[0] for run in runs}:
                continue
            if spec["kind"] == "signal_peptide":
                generate_source({"synthetic": "signalp", "seed": 1, "n_per_partition": N_TRAIN[name], "min_len": 30,
                                 "max_len": 70}, local)
            else:
                generate_source({"synthetic": "dna", "seed": 1, "n_train": N_TRAIN[name], "n_dev": 32, "n_test": 32,
                                 "length": 60, "motif_copies": 2}, local / spec["path"])
        source["local"] = str(local)
    config["tokenizers"] = TOKENIZERS
    for model, spec in config["models"].items():
        family = spec.pop("family")
        spec.pop("hub"), spec.pop("revision", None)  # unpinned models have none
        spec.update(build={"family": family, **BUILD_OF[family]}, tokenizer=TOKENIZER_OF[family], size="tiny")
    kept = {run[1] for run in runs}
    config["models"] = {model: spec for model, spec in config["models"].items() if model in kept}
    config["experiments"] = [{**block, "tasks": [task], "models": [model], "methods": [method]}
                             for task, model, method, _ in runs
                             for block in config["experiments"]
                             if task in block["tasks"] and model in block["models"] and method in block["methods"]]
    config["training"].update(device="cpu")
    config["resources"] = {"finetune_threads": 1}
    path = tmp_path / f"{name}.tiny.yaml"
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path


@pytest.mark.parametrize("name", sorted(TINY_RUNS))
def test_each_seed_recipe_reaches_its_fine_tuning_job(name, tmp_path):
    from seqpeft.config.jobs import finetune_method_params, run_max_length, training_for

    overlay = tiny_overlay(name, tmp_path)
    config = yaml.safe_load(overlay.read_text())
    targets = [tmp_path / "results" / "runs" / "/".join(run) / "metrics.json" for run in TINY_RUNS[name]]
    code, out = run("--configfile", overlay, "-j", "1", *targets)
    assert code == 0, out[-4000:]
    seed = yaml.safe_load((SEEDS / f"{name}.yaml").read_text())
    for (task, model, method, _), target in zip(TINY_RUNS[name], targets):
        metrics = json.loads(target.read_text())
        recipe = training_for(seed, method)
        for key in ("optimizer", "learning_rate", "batch_size", "epochs", "weight_decay", "warmup_ratio",
                    "scheduler", "select_on", "patience", "evals_per_epoch", "seed"):
            assert metrics["training"][key] == recipe.get(key, metrics["training"][key]), (name, key)
            assert key in recipe or key == "select_on" and metrics["training"][key] == "mcc", (name, key)
        assert metrics["max_length"] == run_max_length(seed, task, model, method)
        spec = finetune_method_params(seed, task, model, method)
        adapter = metrics["adapter_config"]
        if "init_r" not in spec:  # AdaLoRA's rank is init_r / target_r (below)
            assert adapter["r"] == spec["r"]
        assert adapter["lora_alpha"] == spec["lora_alpha"]
        if "target_modules" in spec:
            assert sorted(adapter["target_modules"]) == sorted(spec["target_modules"])
        if spec["method"] == "qlora":
            quantization = metrics["quantization"]
            assert quantization["quant_type"] == spec["quant_type"] and quantization["quantized_layers"] > 0
            assert (quantization["double_quant"], quantization["compute_dtype"]) == (spec["double_quant"], spec["compute_dtype"])
            kinds = quantization["parameters"]["by_kind"]
            assert kinds["4bit"]["parameters"] > 0 and sum(v["bytes"] for k, v in kinds.items() if k != "4bit") > 0
            if name == "galaxy_mistral_dna":  # transformers 5's fused experts stay in full precision
                experts = {k: v for k, v in quantization["parameters"]["by_name"].items() if ".experts." in k}
                assert experts and all(v["kind"] == "float32" for v in experts.values())
                head = load_file(str(target.parent / "artifacts" / "head.safetensors"))
                assert metrics["head"] == "transformers" and not any("bias" in key for key in head)
        assert metrics["train_head"] is spec.get("train_head", True)
        if "init_r" in spec:  # AdaLoRA+RS: its schedule, with the run's real step count
            assert (adapter["init_r"], adapter["target_r"], adapter["tinit"], adapter["tfinal"], adapter["deltaT"]) == \
                (spec["init_r"], spec["target_r"], spec["tinit"], spec["tfinal"], spec["deltaT"])
            assert adapter["total_step"] == (spec.get("total_step") or metrics["steps"])  # as published: 7485
            assert metrics["method_args"]["rs_probability"] == spec["rs_probability"]
        if "dsp" in spec:
            assert metrics["dsp"]["encoding"] == spec["dsp"]["encoding"] and metrics["dsp"]["domain"] == "DNA Promoter"
            recorded = json.loads((target.parent / "artifacts" / "seqpeft.json").read_text())["dsp"]
            assert recorded["template"] == "Domain: DNA Promoter\nSequence: {sequence}\nAnnotation:"
            if spec["dsp"]["encoding"] == "nucleotide":  # the seed's one-hot ids, as used
                assert {k: recorded["resolved_nucleotide_ids"][k] for k in "ACGT"} == {"A": 5, "C": 7, "G": 8, "T": 6}
        if "last_n_layers" in spec:
            assert metrics["method_args"]["last_n_layers"] == spec["last_n_layers"]
            assert metrics["remove_top_layers"] == config["models"][model].get("remove_top_layers", 0)
        if name == "peft_sp":  # as published: full depth, soft constraints, fp32, head and CRF never trained
            assert metrics["remove_top_layers"] == 0 and metrics["precision"] == "fp32"
            assert metrics["signal_peptide"]["constraints"] == "soft" and metrics["train_head"] is False
            assert metrics["unchanged_from_init"] == {"head": True, "crf": True}


def test_block_max_length_reaches_the_job_and_gets_dsp_inputs_of_its_length(tmp_path):
    """An experiment block's max_length: the run trains at that length, and a DSP run's inputs are
    encoded for it in a cache of its own (the model's own length keeps the shared one)."""
    config = demo_config()
    config["results"] = str(tmp_path / "results")
    config["methods"]["lora_dsp_short"] = {**config["methods"]["lora_dsp"]}
    config["experiments"] = [{"tasks": ["demo_tf"], "models": ["tiny_llama_bytes"], "methods": ["lora_dsp"]},
                             {"tasks": ["demo_tf"], "models": ["tiny_llama_bytes"], "methods": ["lora_dsp_short"],
                              "max_length": 80}]
    config["training"].update(epochs=1)
    config["sources"]["demo_dna"].update(n_train=64, n_dev=32, n_test=32)
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    code, out = run("-n", "all", "--configfile", path)
    assert code == 0, out[-3000:]
    assert (job_stats(out)["tokenize_dsp"], job_stats(out)["tokenize_dsp_length"]) == (1, 1)
    assert "tokenized/demo_tf/tiny_llama_bytes.dsp-bbpe.len80.npz" in out
    run_dir = tmp_path / "results" / "runs" / "demo_tf" / "tiny_llama_bytes" / "lora_dsp_short" / "0"
    code, out = run("--configfile", path, "-j", "1", run_dir / "metrics.json")
    assert code == 0, out[-3000:]
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert metrics["max_length"] == 80 and metrics["dsp"]["encoding"] == "bbpe"
    assert not (tmp_path / "results" / "tokenized" / "demo_tf" / "tiny_llama_bytes.dsp-bbpe.npz").exists()
