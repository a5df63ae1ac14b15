"""Hyper-parameter search (seqpeft.tune): real trials on a tiny model, a shared journal file,
pruning, resuming after a kill, tuned fine-tuning runs, config errors and the workflow's rules."""

from __future__ import annotations

import copy
import json
import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from helpers import finetune_job
import yaml

from seqpeft.config import check_config
from seqpeft.demo_data import generate_source
from seqpeft.errors import SeqpeftInputError
from seqpeft.tokenize import tokenize_task
from seqpeft.atomic import write_json_atomic
from seqpeft.launch import run_finetune
from seqpeft.settings import FinetuneJob, HpoSettings, read_best_params
from seqpeft.tune import journal_storage, run_trials, study_name, write_best_params

ROOT = Path(__file__).resolve().parents[1]
DEMO = ROOT / "config" / "demo.yaml"
TRAINING = {"epochs": 2, "batch_size": 32, "learning_rate": 1e-3, "patience": 3, "evals_per_epoch": 2}
N_TRAIN = 256


@pytest.fixture(scope="module")
def task(tmp_path_factory, tiny_model_dir):
    root = tmp_path_factory.mktemp("tune_task")
    generate_source({"synthetic": "dna", "seed": 3, "n_train": N_TRAIN, "n_dev": 64, "n_test": 32, "length": 40,
                     "motif_copies": 2}, root / "data")
    tokenize_task({"kind": "sequence_classification"}, root / "data", tiny_model_dir("llama"), root / "cache.npz")
    return root


def make_job(task: Path, model_dir: Path, out_dir: Path, training: dict | None = None, **changes) -> FinetuneJob:
    return finetune_job(task / "cache.npz", model_dir, out_dir, method="lora", training=training or TRAINING, **changes)


def load_trials(storage: Path, job: FinetuneJob, hpo: HpoSettings):
    import optuna

    return optuna.load_study(study_name=study_name(job, hpo), storage=journal_storage(storage)).get_trials()


def states(trials) -> list[str]:
    return [trial.state.name for trial in trials]


@pytest.fixture(scope="module")
def tuned(task, tiny_model_dir, tmp_path_factory):
    """One finished study of 4 trials in one trial job, and its best_params.json."""
    root = tmp_path_factory.mktemp("tuned")
    hpo = HpoSettings.from_dict({"trials": 4, "trial_jobs": 1, "learning_rate": [1e-4, 3e-2], "batch_sizes": [16, 64],
                                 "epochs": 1, "pruner": {"kind": "none"}})
    job = make_job(task, tiny_model_dir("llama"), root / "run")
    marker = run_trials(job, hpo, root / "study.journal", 0)
    write_json_atomic(root / "trials" / "0.json", marker)
    best = write_best_params([root / "trials" / "0.json"], root / "best_params.json")
    return root, job, hpo, best


def test_study_writes_best_params_inside_the_search_space(tuned):
    root, job, hpo, best = tuned
    assert json.loads((root / "best_params.json").read_text()) == best
    assert 1e-4 <= best["params"]["learning_rate"] <= 3e-2
    assert best["params"]["batch_size"] in (16, 64)
    assert best["trials"] == {"complete": 4, "pruned": 0, "failed": 0, "running": 0}
    trials = load_trials(root / "study.journal", job, hpo)
    assert best["best_value"] == max(trial.value for trial in trials)
    assert len({trial.params["learning_rate"] for trial in trials}) == 4
    # epochs capped at 1 with 2 evaluations per epoch: every trial reported 2 dev values
    assert all(sorted(trial.intermediate_values) == [1, 2] for trial in trials)
    # trials train in memory only: the tuned run's directory is never written
    assert not (root / "run").exists()


def test_hpo_true_trains_with_the_tuned_learning_rate_and_batch_size(tuned, task, tiny_model_dir, tmp_path):
    root, _, _, best = tuned
    training = {**TRAINING, "epochs": 1, "hpo": True}
    metrics = run_finetune(make_job(task, tiny_model_dir("llama"), tmp_path / "run", training=training,
                                    best_params=root / "best_params.json"))
    assert metrics["training"]["learning_rate"] == best["params"]["learning_rate"]
    assert metrics["training"]["batch_size"] == best["params"]["batch_size"]
    assert metrics["steps"] == math.ceil(N_TRAIN / best["params"]["batch_size"])  # the batch size really used
    assert metrics["hpo"]["learning_rate"] == best["params"]["learning_rate"]
    assert metrics["hpo"]["best_dev"] == best["best_value"]
    saved = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert saved["hpo"] == metrics["hpo"]


def test_hpo_true_without_best_params_is_refused(task, tiny_model_dir, tmp_path):
    with pytest.raises(SeqpeftInputError, match="training.hpo is true .* no best_params.json"):
        run_finetune(make_job(task, tiny_model_dir("llama"), tmp_path / "run", training={**TRAINING, "hpo": True}))
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("params, problem", [
    ({"learning_rate": -1.0, "batch_size": 16}, "learning_rate must be a positive number"),
    ({"learning_rate": 1e-3, "batch_size": 0}, "batch_size must be a positive integer"),
    ({"learning_rate": 1e-3}, "is not a readable best_params.json"),
])
def test_broken_best_params_are_refused(tmp_path, params, problem):
    path = tmp_path / "best_params.json"
    path.write_text(json.dumps({"params": params}))
    with pytest.raises(SeqpeftInputError, match=problem) as error:
        read_best_params(path)
    assert str(path) in str(error.value)


TRIAL_JOB = """
import json, sys
from pathlib import Path
from seqpeft.atomic import write_json_atomic
from seqpeft.settings import FinetuneJob, HpoSettings
from seqpeft.tune import run_trials
args = json.loads(sys.argv[1])
job = FinetuneJob(**{**args["job"], "cache_path": Path(args["job"]["cache_path"]), "model_dir": Path(args["job"]["model_dir"]),
                     "out_dir": Path(args["job"]["out_dir"])})
summary = run_trials(job, HpoSettings.from_dict(args["hpo"]), Path(args["storage"]), args["trial_job"])
write_json_atomic(Path(args["marker"]), summary)
"""


def start_trial_job(job: FinetuneJob, hpo: dict, storage: Path, trial_job: int, marker: Path) -> subprocess.Popen:
    args = {"job": {key: str(value) if isinstance(value, Path) else value for key, value in vars(job).items()},
            "hpo": hpo, "storage": str(storage), "trial_job": trial_job, "marker": str(marker)}
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT / "src"), os.environ.get("PYTHONPATH", "")])}
    return subprocess.Popen([sys.executable, "-c", TRIAL_JOB, json.dumps(args)], env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)


def test_two_trial_jobs_share_one_study(task, tiny_model_dir, tmp_path):
    hpo = {"trials": 5, "trial_jobs": 2, "learning_rate": [1e-4, 3e-2], "batch_sizes": [32], "epochs": 1}
    job = make_job(task, tiny_model_dir("llama"), tmp_path / "run")
    storage = tmp_path / "study.journal"
    processes = [start_trial_job(job, hpo, storage, index, tmp_path / f"{index}.json") for index in (0, 1)]
    for process in processes:
        out, _ = process.communicate(timeout=300)
        assert process.returncode == 0, out[-3000:]
    trials = load_trials(storage, job, HpoSettings.from_dict(hpo))
    assert len(trials) == 5 and set(states(trials)) <= {"COMPLETE", "PRUNED"}
    by_job = [sorted(t.number for t in trials if t.user_attrs["trial_job"] == index) for index in (0, 1)]
    assert [len(numbers) for numbers in by_job] == [3, 2]  # shares of 5 trials between 2 jobs
    markers = [json.loads((tmp_path / f"{index}.json").read_text()) for index in (0, 1)]
    assert [[t["number"] for t in marker["trials"]] for marker in markers] == by_job
    assert {marker["study"] for marker in markers} == {study_name(job, HpoSettings.from_dict(hpo))}
    # the jobs sampled different values (their samplers are seeded per job)
    assert len({t.params["learning_rate"] for t in trials}) == 5
    summary = write_best_params([tmp_path / "0.json", tmp_path / "1.json"], tmp_path / "best_params.json")
    assert summary["trials"]["complete"] + summary["trials"]["pruned"] == 5


def test_a_killed_trial_job_resumes_its_study(task, tiny_model_dir, tmp_path):
    hpo = {"trials": 2, "trial_jobs": 1, "learning_rate": [1e-4, 3e-2], "batch_sizes": [16], "pruner": {"kind": "none"}}
    settings = HpoSettings.from_dict(hpo)
    job = make_job(task, tiny_model_dir("llama"), tmp_path / "run", training={**TRAINING, "epochs": 4})
    storage = tmp_path / "study.journal"
    process = start_trial_job(job, hpo, storage, 0, tmp_path / "0.json")
    deadline = time.monotonic() + 120
    try:
        while True:  # kill it in the middle of a trial, after it reported a dev value
            assert process.poll() is None and time.monotonic() < deadline, "the trial job ended before it was killed"
            if storage.exists():
                try:
                    trials = load_trials(storage, job, settings)
                except KeyError:  # the study is not created yet
                    trials = []
                if any(t.state.name == "RUNNING" and t.intermediate_values for t in trials):
                    break
            time.sleep(0.1)
    finally:
        process.send_signal(signal.SIGKILL)
        process.communicate()
    killed = [t.number for t in load_trials(storage, job, settings) if t.state.name == "RUNNING"]
    assert len(killed) == 1

    summary = run_trials(job, settings, storage, 0)
    trials = load_trials(storage, job, settings)
    assert trials[killed[0]].state.name == "FAIL"  # the killed attempt's trial no longer looks alive
    assert states(trials).count("COMPLETE") == 2 and "RUNNING" not in states(trials)
    assert [t["state"] for t in summary["trials"]].count("COMPLETE") == 2
    # a rerun of a finished trial job runs nothing more
    run_trials(job, settings, storage, 0)
    assert len(load_trials(storage, job, settings)) == len(trials)


def test_trials_falling_behind_are_pruned(task, tiny_model_dir, tmp_path):
    """A range from far too low to very high learning rates, and a median pruner active after
    the first finished trial: the seeded sampler makes this deterministic."""
    hpo = HpoSettings.from_dict({"trials": 6, "trial_jobs": 1, "learning_rate": [1e-6, 5e-2], "batch_sizes": [16, 32],
                                 "seed": 0, "pruner": {"kind": "median", "startup_trials": 1, "warmup_evaluations": 0}})
    job = make_job(task, tiny_model_dir("llama"), tmp_path / "run")
    run_trials(job, hpo, tmp_path / "study.journal", 0)
    trials = load_trials(tmp_path / "study.journal", job, hpo)
    assert len(trials) == 6
    pruned = [t for t in trials if t.state.name == "PRUNED"]
    complete = [t for t in trials if t.state.name == "COMPLETE"]
    assert pruned and complete, states(trials)
    evaluations = TRAINING["epochs"] * TRAINING["evals_per_epoch"]
    assert all(len(t.intermediate_values) == evaluations for t in complete)
    assert all(len(t.intermediate_values) < evaluations for t in pruned)  # stopped early, not after the fact
    for trial in pruned:  # when it stopped, its best was below the median of the trials finished before it
        step = max(trial.intermediate_values)
        before = [t.intermediate_values[step] for t in complete if t.number < trial.number]
        assert max(trial.intermediate_values.values()) < np.percentile(before, 50)


# ---- config ----


def base_config() -> dict:
    config = yaml.safe_load(DEMO.read_text())
    config.pop("hpo", None)
    return config


@pytest.mark.parametrize("hpo, key, problem", [
    ({"learning_rate": []}, "hpo.learning_rate", "must be a range [low, high]"),
    ({"learning_rate": [1e-3, 1e-4]}, "hpo.learning_rate", "low (0.001) must be below high (0.0001)"),
    ({"learning_rate": [1e-3, 1e-3]}, "hpo.learning_rate", "must be below high"),
    ({"learning_rate": [0, 1e-3]}, "hpo.learning_rate", "must be positive numbers"),
    ({"batch_sizes": [32, 0]}, "hpo.batch_sizes", "batch sizes must be positive integers, got 0"),
    ({"batch_sizes": []}, "hpo.batch_sizes", "must be a non-empty list"),
    ({"trials": 2, "trial_jobs": 3}, "hpo.trial_jobs", "3 trial jobs for 2 trials"),
    ({"pruner": {"kind": "hyperband"}}, "hpo.pruner.kind", "unknown pruner 'hyperband'"),
])
def test_hpo_config_errors_name_the_key(hpo, key, problem):
    config = base_config()
    config["hpo"] = hpo
    with pytest.raises(SeqpeftInputError) as error:
        check_config(config)
    assert str(error.value).startswith(f"{key}: ")
    assert problem in str(error.value)


def test_trial_shares_add_up_and_trial_jobs_get_time_for_theirs():
    from seqpeft.config import size_resources, tune_trials_runtime

    for trials in range(1, 12):
        for jobs in range(1, trials + 1):
            shares = [HpoSettings(trials=trials, trial_jobs=jobs).share(index) for index in range(jobs)]
            assert sum(shares) == trials and max(shares) - min(shares) <= 1
    config = yaml.safe_load((ROOT / "config" / "config.yaml").read_text())
    config["hpo"] = {"trials": 16, "trial_jobs": 4, "epochs": 3}  # 4 trials of 3 epochs: 12 of a run's 10 epochs
    assert tune_trials_runtime(config, "esm2", "lora") == 2 * size_resources(config, "esm2")["runtime"]
    config["hpo"] = {"trials": 4, "trial_jobs": 4, "epochs": 3}
    assert tune_trials_runtime(config, "esm2", "lora") == size_resources(config, "esm2")["runtime"]


def snakemake(*args, workdir: Path | None = None) -> tuple[int, str]:
    cmd = [sys.executable, "-m", "snakemake", "--snakefile", str(ROOT / "Snakefile")]
    if workdir is not None:
        cmd += ["--directory", str(workdir)]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT / "src"), os.environ.get("PYTHONPATH", "")]),
           "HF_HUB_OFFLINE": "1"}
    result = subprocess.run(cmd + [str(arg) for arg in args], cwd=ROOT, env=env, capture_output=True, text=True,
                            timeout=600)
    return result.returncode, result.stdout + result.stderr


def write_config(path: Path, config: dict) -> Path:
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path


def test_bad_hpo_range_stops_the_workflow_with_the_key(tmp_path):
    config = base_config()
    config["results"] = str(tmp_path / "results")
    config["hpo"] = {"learning_rate": [1e-2, 1e-5]}
    code, out = snakemake("-n", "--configfile", write_config(tmp_path / "config.yaml", config))
    assert code != 0
    assert "hpo.learning_rate: low (0.01) must be below high (1e-05)" in out
    assert "Traceback" not in out


def dry_run_jobs(output: str) -> list[dict]:
    """The jobs of a dry run: rule, input, output, wildcards."""
    jobs = []
    for block in output.split("\nrule ")[1:]:
        rule, _, body = block.partition(":\n")
        job = {"rule": rule.strip()}
        for line in body.splitlines():
            if not line.startswith("    "):
                break
            key, _, value = line.strip().partition(": ")
            job[key] = value
        jobs.append(job)
    return jobs


def hpo_config(results: Path) -> dict:
    """The demo with two tuned methods: LoRA on a DNA task (replicate seeds) and on a CV task (folds)."""
    config = base_config()
    config["results"] = str(results)
    config["tasks"]["demo_tf"]["partitions"] = [0, 1]
    config["tasks"]["demo_sp"]["partitions"] = ["t0v1", "t1v2"]
    config["methods"]["lora_hpo"] = {"method": "lora", "r": 4, "training": {"hpo": True}}
    config["experiments"] = [{"tasks": ["demo_tf"], "models": ["tiny_llama_dna"], "methods": ["frozen", "lora_hpo"]},
                             {"tasks": ["demo_sp"], "models": ["tiny_esm"], "methods": ["lora_hpo"]}]
    config["hpo"] = {"trials": 4, "trial_jobs": 2, "epochs": 1}
    return config


def test_dry_run_chains_trial_jobs_tune_and_tuned_finetunes(tmp_path):
    results = tmp_path / "results"
    code, out = snakemake("-n", "--configfile", write_config(tmp_path / "config.yaml", hpo_config(results)))
    assert code == 0, out[-3000:]
    jobs = dry_run_jobs(out)
    tune_dir = f"{results}/tuning"
    # one study per task x model x method on replicate seeds (tuned on the first), one per fold
    studies = {f"{tune_dir}/demo_tf/tiny_llama_dna/lora_hpo/0", f"{tune_dir}/demo_sp/tiny_esm/lora_hpo/t0v1",
               f"{tune_dir}/demo_sp/tiny_esm/lora_hpo/t1v2"}
    tune = {job["output"] for job in jobs if job["rule"] == "tune"}
    assert tune == {f"{study}/best_params.json" for study in studies}
    trial_jobs = {job["output"] for job in jobs if job["rule"] == "tune_trials"}
    assert trial_jobs == {f"{study}/trials/{index}.json" for study in studies for index in (0, 1)}
    for job in jobs:
        if job["rule"] == "tune":
            study = job["output"].rsplit("/", 1)[0]
            assert sorted(job["input"].split(", ")) == [f"{study}/trials/0.json", f"{study}/trials/1.json"]
        if job["rule"] == "tune_trials":
            assert "best_params" not in job["input"] and job["resources"]
    finetune = {job["wildcards"]: job["input"] for job in jobs if job["rule"] == "finetune"}
    for partition in ("0", "1"):
        assert f"{tune_dir}/demo_tf/tiny_llama_dna/lora_hpo/0/best_params.json" in \
            finetune[f"task=demo_tf, model=tiny_llama_dna, method=lora_hpo, partition={partition}"]
        assert "best_params" not in finetune[f"task=demo_tf, model=tiny_llama_dna, method=frozen, partition={partition}"]
    for fold in ("t0v1", "t1v2"):
        assert f"{tune_dir}/demo_sp/tiny_esm/lora_hpo/{fold}/best_params.json" in \
            finetune[f"task=demo_sp, model=tiny_esm, method=lora_hpo, partition={fold}"]


@pytest.mark.slow
def test_workflow_tunes_then_fine_tunes_with_the_best_params(tmp_path):
    """A real run: two trial jobs share a study, tune writes best_params.json, the tuned run uses it."""
    workdir, results = tmp_path / "work", tmp_path / "results"
    workdir.mkdir()
    config = hpo_config(results)
    config["sources"] = {"demo_dna": {**config["sources"]["demo_dna"], "n_train": 200, "n_dev": 64, "n_test": 64}}
    config["tasks"] = {"demo_tf": {**config["tasks"]["demo_tf"], "partitions": [0]}}
    config["tokenizers"] = {"nucleotide": config["tokenizers"]["nucleotide"]}
    config["models"] = {"tiny_llama_dna": config["models"]["tiny_llama_dna"]}
    config["methods"] = {"lora_hpo": config["methods"]["lora_hpo"]}
    config["experiments"] = [{"tasks": ["demo_tf"], "models": ["tiny_llama_dna"], "methods": ["lora_hpo"]}]
    config["training"]["epochs"] = 2
    config["hpo"] = {"trials": 2, "trial_jobs": 2, "epochs": 1, "batch_sizes": [16, 32]}
    configfile = write_config(tmp_path / "config.yaml", config)
    run_dir = results / "runs" / "demo_tf" / "tiny_llama_dna" / "lora_hpo" / "0"
    code, out = snakemake(run_dir / "metrics.json", "--cores", "2", "--configfile", configfile, workdir=workdir)
    assert code == 0, out[-5000:]
    study = results / "tuning" / "demo_tf" / "tiny_llama_dna" / "lora_hpo" / "0"
    best = json.loads((study / "best_params.json").read_text())
    assert best["trials"]["complete"] + best["trials"]["pruned"] == 2 and best["trial_jobs"] == 2
    markers = [json.loads((study / "trials" / f"{index}.json").read_text()) for index in (0, 1)]
    assert [len(marker["trials"]) for marker in markers] == [1, 1]
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert metrics["training"]["learning_rate"] == best["params"]["learning_rate"]
    assert metrics["training"]["batch_size"] == best["params"]["batch_size"]
    assert "tuned settings from" in (run_dir / "train.log").read_text()
    code, out = snakemake(run_dir / "metrics.json", "-n", "--configfile", configfile, workdir=workdir)
    assert code == 0 and "Nothing to be done" in out, out[-3000:]
    # a changed search space reruns the trial jobs, in a new study of the same journal file
    changed = copy.deepcopy(config)
    changed["hpo"]["batch_sizes"] = [16]
    code, out = snakemake(run_dir / "metrics.json", "-n", "--configfile", write_config(tmp_path / "changed.yaml", changed),
                          "--rerun-triggers", "mtime", "params", "input", workdir=workdir)
    assert code == 0, out[-3000:]
    assert {job["rule"] for job in dry_run_jobs(out)} == {"tune_trials", "tune", "finetune"}
    # the configured learning rate is not the study's business: only the fine-tuning job reruns
    changed = copy.deepcopy(config)
    changed["training"]["learning_rate"] = 1e-2
    code, out = snakemake(run_dir / "metrics.json", "-n", "--configfile", write_config(tmp_path / "lr.yaml", changed),
                          "--rerun-triggers", "mtime", "params", "input", workdir=workdir)
    assert code == 0, out[-3000:]
    assert {job["rule"] for job in dry_run_jobs(out)} == {"finetune"}
