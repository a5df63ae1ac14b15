"""Hyper-parameter search (seqpeft.training.tune): a deterministic study of real trials on a tiny model,
rounds and their order, pruning against earlier rounds, a killed trial, tuned fine-tuning runs,
search spaces, config errors and the workflow's rules."""

from __future__ import annotations

import copy
import json
import math
import os
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml

from seqpeft.preflight.check import check_config
from seqpeft.tasks.demo_data import generate_source
from seqpeft.util.errors import SeqpeftInputError
from seqpeft.methods.registry import METHOD_NAMES
from seqpeft.tasks import tokenize_task
from helpers import finetune_job
from seqpeft.util.atomic import write_json_atomic
from seqpeft.training.launch import run_finetune
from seqpeft.config.settings import FinetuneJob, read_best_params
from seqpeft.training.tune import run_trial, write_best_params
from seqpeft.config.schema import defaults
from seqpeft.config.tune_settings import METHOD_SPACES, HpoSettings

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


def study_of(hpo: dict, space: dict | None = None):
    """The study settings of an hpo section whose low_rank space is ``space``."""
    hpo = {**hpo, "spaces": {"low_rank": space or {"learning_rate": [1e-4, 3e-2], "batch_sizes": [16, 32]}}}
    return HpoSettings.from_dict(hpo).study("low_rank")


def run_study(job: FinetuneJob, study, directory: Path, order: list[int] | None = None) -> dict:
    """Every trial of ``study`` into ``directory/trials``, in ``order`` (each trial after the
    earlier rounds it needs, as the workflow schedules them), then best_params.json."""
    trials = directory / "trials"
    for trial in order or range(study.trials):
        earlier = [trials / f"{number}.json" for number in study.earlier_trials(trial)]
        write_json_atomic(trials / f"{trial}.json", run_trial(job, study, trial, earlier))
    return write_best_params([trials / f"{trial}.json" for trial in range(study.trials)],
                             directory / "best_params.json", study)


def records(directory: Path, trials: int) -> list[dict]:
    return [json.loads((directory / "trials" / f"{trial}.json").read_text()) for trial in range(trials)]


@pytest.fixture(scope="module")
def tuned(task, tiny_model_dir, tmp_path_factory):
    """One finished study of 4 trials in rounds of one, and its best_params.json."""
    root = tmp_path_factory.mktemp("tuned")
    study = study_of({"trials": 4, "trial_jobs": 1, "epochs": 1, "pruner": {"kind": "none"}},
                     {"learning_rate": [1e-4, 3e-2], "batch_sizes": [16, 64]})
    job = make_job(task, tiny_model_dir("llama"), root / "run")
    best = run_study(job, study, root)
    return root, job, study, best


def test_study_writes_best_params_inside_the_search_space(tuned):
    root, job, study, best = tuned
    assert json.loads((root / "best_params.json").read_text()) == best
    assert 1e-4 <= best["params"]["learning_rate"] <= 3e-2
    assert best["params"]["batch_size"] in (16, 64)
    assert best["trials"] == {"complete": 4, "pruned": 0, "failed": 0}
    trials = records(root, 4)
    assert best["best_value"] == max(trial["value"] for trial in trials)
    assert best["history"][best["best_trial"]]["params"] == best["params"]
    assert len({trial["params"]["learning_rate"] for trial in trials}) == 4
    # epochs capped at 1 with 2 evaluations per epoch: every trial reported 2 dev values
    assert all([step for step, _ in trial["intermediate_values"]] == [1, 2] for trial in trials)
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


# ---- determinism: order, delays, a killed trial ----

# 6 trials in rounds of 2; the median pruner may prune from round 1 on, after one evaluation.
ORDERED = {"trials": 6, "trial_jobs": 2, "seed": 0, "pruner": {"kind": "median", "startup_trials": 1,
                                                               "warmup_evaluations": 0}}


@pytest.fixture(scope="module")
def ordered(task, tiny_model_dir, tmp_path_factory):
    """The study ORDERED run with each round's trials in order, and in reverse order."""
    study = study_of(ORDERED, {"learning_rate": [3e-4, 1e-1], "batch_sizes": [16, 32]})
    job = make_job(task, tiny_model_dir("llama"), tmp_path_factory.mktemp("unused") / "run")
    forward, backward = tmp_path_factory.mktemp("forward"), tmp_path_factory.mktemp("backward")
    run_study(job, study, forward, order=[0, 1, 2, 3, 4, 5])
    run_study(job, study, backward, order=[1, 0, 3, 2, 5, 4])
    return study, job, forward, backward


def test_a_study_does_not_depend_on_the_order_its_trials_run_in(ordered):
    study, _, forward, backward = ordered
    assert (forward / "best_params.json").read_bytes() == (backward / "best_params.json").read_bytes()
    for trial in range(study.trials):
        assert (forward / "trials" / f"{trial}.json").read_bytes() == (backward / "trials" / f"{trial}.json").read_bytes()
    history = json.loads((forward / "best_params.json").read_text())["history"]
    assert [entry["trial"] for entry in history] == list(range(6)) and [entry["round"] for entry in history] == [0, 0, 1, 1, 2, 2]
    # the trials of a round differ from each other, and the rounds from each other
    assert len({entry["params"]["learning_rate"] for entry in history}) == 6


def test_trials_are_pruned_against_earlier_rounds_only(ordered):
    study, _, forward, _ = ordered
    trials = records(forward, study.trials)
    evaluations = TRAINING["epochs"] * TRAINING["evals_per_epoch"]
    states = [trial["state"] for trial in trials]
    assert states[:2] == ["COMPLETE", "COMPLETE"], states  # round 0 has nothing to be pruned against
    assert "PRUNED" in states, states  # 3e-4 .. 1e-1: some trials fall far behind
    for trial in trials:
        values = dict(trial["intermediate_values"])
        if trial["state"] == "COMPLETE":
            assert len(values) == evaluations or trial["best_epoch"] < TRAINING["epochs"]
            continue
        assert trial["state"] == "PRUNED" and len(values) < evaluations  # stopped early, not after the fact
        step = max(values)  # when it stopped, its best was below the median of earlier rounds' complete trials
        before = [dict(other["intermediate_values"])[step] for other in trials
                  if other["round"] < trial["round"] and other["state"] == "COMPLETE"
                  and step in dict(other["intermediate_values"])]
        assert before and max(values.values()) < np.percentile(before, 50)


def test_a_trial_needs_the_earlier_rounds_of_its_own_study(ordered, task, tiny_model_dir, tmp_path):
    study, job, forward, _ = ordered
    with pytest.raises(SeqpeftInputError, match="needs the results of trials 0..1, given 1 files"):
        run_trial(job, study, 2, [forward / "trials" / "0.json"])
    other = make_job(task, tiny_model_dir("llama"), tmp_path / "run", training={**TRAINING, "patience": 2})
    with pytest.raises(SeqpeftInputError, match="belongs to study .*it was run with other settings"):
        run_trial(other, study, 2, [forward / "trials" / "0.json", forward / "trials" / "1.json"])


TRIAL = """
import json, sys
from pathlib import Path
from seqpeft.util.atomic import write_json_atomic
from seqpeft.config.settings import FinetuneJob
from seqpeft.training.tune import run_trial
from seqpeft.config.tune_settings import StudySettings
args = json.loads(sys.argv[1])
job = FinetuneJob(**{**args["job"], "cache_path": Path(args["job"]["cache_path"]), "model_dir": Path(args["job"]["model_dir"]),
                     "out_dir": Path(args["job"]["out_dir"])})
record = run_trial(job, StudySettings.from_params(args["study"]), args["trial"], [Path(p) for p in args["earlier"]])
write_json_atomic(Path(args["out"]), record)
"""


def test_a_killed_trial_reruns_with_the_same_parameters_and_result(ordered, tmp_path):
    study, job, forward, _ = ordered
    earlier = [str(forward / "trials" / f"{number}.json") for number in study.earlier_trials(2)]
    out = tmp_path / "trials" / "2.json"
    args = {"job": {key: str(value) if isinstance(value, Path) else value for key, value in vars(job).items()},
            "study": study.params(), "trial": 2, "earlier": earlier, "out": str(out)}
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT / "src"), os.environ.get("PYTHONPATH", "")])}
    process = subprocess.Popen([sys.executable, "-c", TRIAL, json.dumps(args)], env=env, stdout=subprocess.PIPE,
                               stderr=subprocess.STDOUT, text=True)
    seen = []
    try:
        for line in process.stdout:  # kill it in the middle of the trial, after its first evaluation
            seen.append(line)
            if "dev loss" in line:
                break
    finally:
        process.send_signal(signal.SIGKILL)
        process.communicate()
    assert any("dev loss" in line for line in seen), "".join(seen)[-3000:]
    assert not out.exists()  # a trial writes its result only when it is over
    rerun = run_trial(job, study, 2, [Path(path) for path in earlier])
    assert rerun == json.loads((forward / "trials" / "2.json").read_text())


# ---- search spaces and config ----


def base_config() -> dict:
    config = yaml.safe_load(DEMO.read_text())
    config.pop("hpo", None)
    return config


def test_every_method_family_has_its_default_space_in_the_schema():
    hpo_defaults = defaults("hpo")
    hpo = HpoSettings.from_dict({})
    assert hpo.trials == hpo_defaults["trials"] and hpo.pruner.kind == hpo_defaults["pruner"]["kind"]
    assert set(METHOD_NAMES) <= set(METHOD_SPACES)
    assert set(METHOD_SPACES.values()) <= set(hpo.spaces) == set(hpo_defaults["spaces"])
    # prompts search higher learning rates than full fine-tuning
    assert hpo.spaces["prompt"]["learning_rate"][0] > hpo.spaces["full"]["learning_rate"][0]
    assert hpo.spaces["prompt"]["learning_rate"][1] > hpo.spaces["full"]["learning_rate"][1]


def test_the_seed_search_is_a_named_space():
    study = HpoSettings.from_dict({"trials": 8, "epochs": 2}).study("seed_optuna")
    assert study.learning_rate == (1e-6, 1e-4) and study.batch_sizes == (4, 8, 16, 32)
    assert (study.trials, study.epochs, study.pruner.kind) == (20, 4, "none")  # its own budget, not hpo's


def test_a_method_tunes_in_its_family_space_or_the_one_it_names():
    from seqpeft.config.tune_settings import study_settings

    config = base_config()
    config["methods"]["prompt_hpo"] = {"method": "prompt_tuning", "training": {"hpo": True}}
    config["methods"]["lora_seed"] = {"method": "lora", "training": {"hpo": "seed_optuna"}}
    config["methods"]["loha_hpo"] = {"peft": "LoHaConfig", "training": {"hpo": True}}
    config["hpo"] = {"spaces": {"prompt": {"learning_rate": [1e-3, 1e-1], "batch_sizes": [8]}}}
    check_config(config)
    assert study_settings(config, "lora_hpo").space == "low_rank"
    prompt = study_settings(config, "prompt_hpo")
    assert (prompt.space, prompt.learning_rate, prompt.batch_sizes) == ("prompt", (1e-3, 1e-1), (8,))
    assert study_settings(config, "lora_seed").space == "seed_optuna"
    assert study_settings(config, "loha_hpo").space == "low_rank"
    # the other defaults stay when one space is replaced
    assert study_settings(config, "lora_hpo").learning_rate == tuple(defaults("hpo")["spaces"]["low_rank"]["learning_rate"])


def test_rounds_of_trial_jobs():
    study = HpoSettings.from_dict({"trials": 5, "trial_jobs": 2}).study("low_rank")
    assert [list(study.earlier_trials(trial)) for trial in range(5)] == [[], [], [0, 1], [0, 1], [0, 1, 2, 3]]
    single = HpoSettings.from_dict({"trials": 3, "trial_jobs": 1}).study("low_rank")
    assert [list(single.earlier_trials(trial)) for trial in range(3)] == [[], [0], [0, 1]]


@pytest.mark.parametrize("hpo, key, problem", [
    ({"spaces": {"low_rank": {"learning_rate": [], "batch_sizes": [16]}}}, "hpo.spaces.low_rank.learning_rate",
     "must be a range [low, high]"),
    ({"spaces": {"low_rank": {"learning_rate": [1e-3, 1e-4], "batch_sizes": [16]}}}, "hpo.spaces.low_rank.learning_rate",
     "low (0.001) must be below high (0.0001)"),
    ({"spaces": {"mine": {"learning_rate": [0, 1e-3], "batch_sizes": [16]}}}, "hpo.spaces.mine.learning_rate",
     "must be positive numbers"),
    ({"spaces": {"low_rank": {"learning_rate": [1e-4, 1e-3], "batch_sizes": [32, 0]}}}, "hpo.spaces.low_rank.batch_sizes",
     "batch sizes must be positive integers, got 0"),
    ({"spaces": {"low_rank": {"learning_rate": [1e-4, 1e-3]}}}, "hpo.spaces.low_rank.batch_sizes", "is missing"),
    ({"learning_rate": [1e-4, 1e-3]}, "hpo.learning_rate", "hpo.spaces.<name>.learning_rate"),
    ({"trials": 2, "trial_jobs": 3}, "hpo.trial_jobs", "3 trials per round for the 2 trials"),
    ({"pruner": {"kind": "hyperband"}}, "hpo.pruner.kind", "unknown pruner 'hyperband'"),
    ({"spaces": {"low_rank": {"learning_rate": [1e-4, 1e-3], "batch_sizes": [16], "pruner": {"kind": "x"}}}},
     "hpo.spaces.low_rank.pruner.kind", "unknown pruner 'x'"),
])
def test_hpo_config_errors_name_the_key(hpo, key, problem):
    config = base_config()
    config["hpo"] = hpo
    with pytest.raises(SeqpeftInputError) as error:
        check_config(config)
    assert str(error.value).startswith(f"{key}: ")
    assert problem in str(error.value)


def test_an_unknown_space_name_is_refused_at_the_method():
    config = base_config()
    config["methods"]["lora_hpo"]["training"]["hpo"] = "seed_optuan"
    with pytest.raises(SeqpeftInputError) as error:
        check_config(config)
    assert str(error.value).startswith("methods.lora_hpo.training.hpo: unknown search space 'seed_optuan'")


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
    config["hpo"] = {"spaces": {"low_rank": {"learning_rate": [1e-2, 1e-5], "batch_sizes": [16]}}}
    code, out = snakemake("-n", "--configfile", write_config(tmp_path / "config.yaml", config))
    assert code != 0
    assert "hpo.spaces.low_rank.learning_rate: low (0.01) must be below high (1e-05)" in out
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
    config["hpo"] = {"trials": 5, "trial_jobs": 2, "epochs": 1}
    return config


def test_dry_run_chains_rounds_of_trials_tune_and_tuned_finetunes(tmp_path):
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
    trials = {job["output"]: job["input"] for job in jobs if job["rule"] == "tune_trials"}
    assert set(trials) == {f"{study}/trials/{trial}.json" for study in studies for trial in range(5)}
    for study in studies:
        # rounds of 2: a trial's inputs are the results of every trial of the earlier rounds
        for trial, earlier in enumerate([[], [], [0, 1], [0, 1], [0, 1, 2, 3]]):
            inputs = trials[f"{study}/trials/{trial}.json"].split(", ")
            assert sorted(path for path in inputs if "/trials/" in path) == [f"{study}/trials/{n}.json" for n in earlier]
            assert "best_params" not in trials[f"{study}/trials/{trial}.json"]
    for job in jobs:
        if job["rule"] == "tune":
            study = job["output"].rsplit("/", 1)[0]
            assert sorted(job["input"].split(", ")) == sorted(f"{study}/trials/{n}.json" for n in range(5))
    finetune = {job["wildcards"]: job["input"] for job in jobs if job["rule"] == "finetune"}
    for partition in ("0", "1"):
        assert f"{tune_dir}/demo_tf/tiny_llama_dna/lora_hpo/0/best_params.json" in \
            finetune[f"task=demo_tf, model=tiny_llama_dna, method=lora_hpo, partition={partition}"]
        assert "best_params" not in finetune[f"task=demo_tf, model=tiny_llama_dna, method=frozen, partition={partition}"]
    for fold in ("t0v1", "t1v2"):
        assert f"{tune_dir}/demo_sp/tiny_esm/lora_hpo/{fold}/best_params.json" in \
            finetune[f"task=demo_sp, model=tiny_esm, method=lora_hpo, partition={fold}"]


def tiny_hpo_config(results: Path) -> dict:
    """lora_hpo alone on a small demo_tf: one round of 2 trials of 2 epochs."""
    config = hpo_config(results)
    config["sources"] = {"demo_dna": {**config["sources"]["demo_dna"], "n_train": 200, "n_dev": 64, "n_test": 64}}
    config["tasks"] = {"demo_tf": {**config["tasks"]["demo_tf"], "partitions": [0]}}
    config["tokenizers"] = {"nucleotide": config["tokenizers"]["nucleotide"]}
    config["models"] = {"tiny_llama_dna": config["models"]["tiny_llama_dna"]}
    config["methods"] = {"lora_hpo": config["methods"]["lora_hpo"]}
    config["experiments"] = [{"tasks": ["demo_tf"], "models": ["tiny_llama_dna"], "methods": ["lora_hpo"]}]
    config["training"].update({"epochs": 2, "evals_per_epoch": 2})
    config["hpo"] = {"trials": 2, "trial_jobs": 2, "pruner": {"kind": "median", "startup_trials": 1,
                                                              "warmup_evaluations": 0},
                     "spaces": {"low_rank": {"learning_rate": [1e-5, 5e-2], "batch_sizes": [16, 32]}}}
    return config


@pytest.mark.slow
def test_two_clean_workflow_runs_tune_to_the_same_values_whatever_the_job_order(tmp_path):
    """Two clean runs of the tuning rules: A lets Snakemake run each round's two trials in parallel,
    B runs them in reverse order, one at a time. Same trials, best_params.json and tuned test MCC;
    then what reruns after config changes (the in-process tests cover several rounds)."""
    study_dir = Path("tuning") / "demo_tf" / "tiny_llama_dna" / "lora_hpo" / "0"
    run_dir = Path("runs") / "demo_tf" / "tiny_llama_dna" / "lora_hpo" / "0"
    outcomes = {}
    for name in ("A", "B"):
        workdir, results = tmp_path / name / "work", tmp_path / name / "results"
        workdir.mkdir(parents=True)
        configfile = write_config(tmp_path / name / "config.yaml", tiny_hpo_config(results))
        if name == "A":
            targets = [[results / run_dir / "metrics.json", "--cores", "2"]]
        else:  # trial 1 before trial 0, then the rest
            targets = [[results / study_dir / "trials" / f"{trial}.json", "--cores", "1"] for trial in (1, 0)]
            targets.append([results / run_dir / "metrics.json", "--cores", "1"])
        for target in targets:
            code, out = snakemake(*target, "--configfile", configfile, workdir=workdir)
            assert code == 0, out[-5000:]
        outcomes[name] = (results, configfile, workdir)
    (a, _, _), (b, _, _) = outcomes["A"], outcomes["B"]
    mtime = {trial: (b / study_dir / "trials" / f"{trial}.json").stat().st_mtime for trial in range(2)}
    assert mtime[1] < mtime[0]  # B really ran the round in reverse
    for trial in range(2):
        assert (a / study_dir / "trials" / f"{trial}.json").read_bytes() == \
            (b / study_dir / "trials" / f"{trial}.json").read_bytes()
    assert (a / study_dir / "best_params.json").read_bytes() == (b / study_dir / "best_params.json").read_bytes()
    best = json.loads((a / study_dir / "best_params.json").read_text())
    assert [entry["trial"] for entry in best["history"]] == [0, 1]
    metrics = [json.loads((results / run_dir / "metrics.json").read_text()) for results in (a, b)]
    assert metrics[0]["test"] == metrics[1]["test"]  # the tuned run's test MCC (and the rest) is identical
    assert metrics[0]["training"]["learning_rate"] == best["params"]["learning_rate"]
    assert metrics[0]["training"]["batch_size"] == best["params"]["batch_size"]
    assert "tuned settings from" in (a / run_dir / "train.log").read_text()

    results, configfile, workdir = outcomes["A"]
    target = results / run_dir / "metrics.json"
    config = yaml.safe_load(configfile.read_text())

    def planned(changed: dict) -> dict[str, list[str]]:
        code, out = snakemake(target, "-n", "--configfile", write_config(tmp_path / "changed.yaml", changed),
                              "--rerun-triggers", "mtime", "params", "input", workdir=workdir)
        assert code == 0, out[-3000:]
        jobs: dict[str, list[str]] = {}
        for job in dry_run_jobs(out):
            jobs.setdefault(job["rule"], []).append(job.get("wildcards", ""))
        return jobs

    assert planned(config) == {}  # finished trials are not rerun
    more = copy.deepcopy(config)
    more["hpo"]["trials"] = 4  # extends the study: only the new round's trials run
    jobs = planned(more)
    assert set(jobs) == {"tune_trials", "tune", "finetune"}
    assert sorted(w.rsplit("trial=", 1)[1] for w in jobs["tune_trials"]) == ["2", "3"]
    narrower = copy.deepcopy(config)
    narrower["hpo"]["spaces"]["low_rank"]["batch_sizes"] = [16]  # a new space: a new study
    assert len(planned(narrower)["tune_trials"]) == 2
    # the configured learning rate is not the study's business: only the fine-tuning job reruns
    changed = copy.deepcopy(config)
    changed["training"]["learning_rate"] = 1e-2
    assert set(planned(changed)) == {"finetune"}
