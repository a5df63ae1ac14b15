import math
import re
from functools import cache
from pathlib import Path

from seqpeft.preflight.check import finetune_threads, size_resources, world_size_of
from seqpeft.config.jobs import (
    canonical,
    download_sources,
    training_cache,
    dsp_encoding,
    dsp_settings,
    expand_runs,
    finetune_spec,
    model_params,
    prepared_models,
    rehearsal_stand_ins,
    synthetic_sources,
    derived_sources,
    task_params,
    tune_trials_spec,
)
from seqpeft.config.paths import (
    REHEARSAL_PATTERN,
    RUN_PATTERN,
    TUNING_PATTERN,
    model_dir,
    rehearsal_table,
    results_dir,
    source_dir,
    task_data_path,
    tokenizer_dir,
    tokenizer_of,
    tuning_dir,
    wildcard_pattern,
)
from seqpeft.preflight.plan import rehearsal_estimates
from seqpeft.core.registry import task_kind
from seqpeft.config.tune_settings import study_settings
from seqpeft.methods.dsp import ENCODINGS

R = results_dir(config)
RUNS = expand_runs(config)
RUN_TASKS = list(dict.fromkeys(run.task for run in RUNS))
RUN_MODELS = list(dict.fromkeys(run.model for run in RUNS))
AXES = list(config["figures"]["pareto_axes"])
FINETUNE_THREADS = finetune_threads(config)
RUN_DIR = wildcard_pattern(RUN_PATTERN, config)
REHEARSAL_DIR = wildcard_pattern(REHEARSAL_PATTERN, config)
TUNE_DIR = wildcard_pattern(TUNING_PATTERN, config)  # its partition is the tuning partition (seqpeft.config.paths)
# Shipped published tables live in the checkout: a relative path is read from there, wherever -d points.
PUBLISHED = str(Path(workflow.basedir) / config["published"]) if config["published"] else None


def one_of(names):
    """A wildcard regex matching exactly the given names (nothing if there are none)."""
    names = sorted({str(name) for name in names})
    return "|".join(re.escape(name) for name in names) if names else "(?!)"


# Every wildcard is one of the config's names, so paths never match ambiguously and each source
# maps to exactly one producer: the download or the generator (a `local` copy needs neither).
wildcard_constraints:
    source=one_of(config["sources"]),
    task=one_of(config["tasks"]),
    model=one_of(config["models"]),
    method=one_of(config["methods"]),
    tokenizer=one_of([*config["tokenizers"], *config["models"]]),
    partition=one_of(run.partition for run in RUNS),
    axis=one_of(AXES),
    trial=r"\d+",
    encoding=one_of(ENCODINGS),


DOWNLOADED_SOURCE = one_of(download_sources(config))
SYNTHETIC_SOURCE = one_of(synthetic_sources(config))
DERIVED_SOURCE = one_of(derived_sources(config))
BUILT_TOKENIZER = one_of(config["tokenizers"])
PREPARED_MODEL = one_of(prepared_models(config))


# ---- parameters: only each job's own slice of the config, so unrelated edits rerun nothing ----
# Each is computed once per name: thousands of jobs share a handful of models, tasks and methods.


@cache
def _finetune_spec(task, model, method, tuning=False):
    return (tune_trials_spec if tuning else finetune_spec)(config, task, model, method)


def job_spec(wildcards):
    """finetune: task, model, method and training settings of the run."""
    return _finetune_spec(wildcards.task, wildcards.model, wildcards.method)


def trial_spec(wildcards):
    """tune_trials: as job_spec, with the training settings the study sees."""
    return _finetune_spec(wildcards.task, wildcards.model, wildcards.method, tuning=True)


@cache
def _study(method):
    return study_settings(config, method)


def hpo_args(wildcards):
    """tune_trials and tune: the study of the run's method (space, budget, seed, pruner), less
    its number of trials, so that raising it adds trials and reruns none."""
    return canonical(_study(wildcards.method).params())


# ---- inputs ----


def derive_source_input(wildcards):
    """derive_source: the directory (or local file) of the source it derives from; the rule that
    makes that source declares the directory, the file inside it is read at run time."""
    return {"source": source_dir(config, config["sources"][wildcards.source]["from"])}


def model_tokenizer_input(wildcards):
    """prepare_model: the built tokenizer a config-built (or re-tokenized) model uses, if any."""
    name = config["models"][wildcards.model].get("tokenizer")
    return {"tokenizer": tokenizer_dir(config, name)} if name else {}


def tokenize_input(wildcards):
    """tokenize: the task's source directory (or local copy) and the tokenizer directory."""
    source = config["tasks"][wildcards.task]["source"]
    return {
        "data": source_dir(config, source),
        "tokenizer": tokenizer_dir(config, wildcards.tokenizer),
    }


def tokenize_dsp_input(wildcards):
    """tokenize_dsp: the task's source directory and the tokenizer of the model."""
    source = config["tasks"][wildcards.task]["source"]
    return {
        "data": source_dir(config, source),
        "tokenizer": tokenizer_dir(config, tokenizer_of(config, wildcards.model)),
    }


def training_input(wildcards):
    """tune_trials and finetune: the task tokenized with the model's tokenizer (for DSP variants:
    with the task's template, per model and encoding), and the model directory."""
    cache = training_cache(config, wildcards.task, wildcards.model, wildcards.method)
    return {"cache": cache, "model": model_dir(config, wildcards.model)}


def finetune_input(wildcards):
    """finetune: what training needs, and the tuning study's best_params.json when training says hpo."""
    inputs = training_input(wildcards)
    if job_spec(wildcards)["training"].get("hpo"):
        study = tuning_dir(config, wildcards.task, wildcards.model, wildcards.method, wildcards.partition)
        inputs["best_params"] = f"{study}/best_params.json"
    return inputs


def _trial_files(wildcards, trials):
    study = TUNING_PATTERN.format(results=R, task=wildcards.task, model=wildcards.model, method=wildcards.method,
                                  partition=wildcards.partition)
    return [f"{study}/trials/{trial}.json" for trial in trials]


def tune_trial_input(wildcards):
    """tune_trials: what training needs, and the results of every trial of the earlier rounds
    (the barrier that makes a study independent of timing, see seqpeft.training.tune)."""
    earlier = _study(wildcards.method).earlier_trials(int(wildcards.trial))
    return {**training_input(wildcards), "earlier": _trial_files(wildcards, earlier)}


def tune_trial_markers(wildcards):
    """tune: the result of every trial of the study."""
    return _trial_files(wildcards, range(_study(wildcards.method).trials))


def run_files(name, task=None):
    """One file of every run dir of the matrix (optionally of one task only)."""
    return [
        f"{RUN_PATTERN.format(results=R, task=run.task, model=run.model, method=run.method, partition=run.partition)}/{name}"
        for run in RUNS
        if task is None or run.task == task
    ]


def kind_run_metrics(kind):
    """An input function: metrics.json of every run of the tasks of one kind (for that kind's own results)."""
    return lambda wildcards: [path for task in RUN_TASKS if config["tasks"][task]["kind"] == kind
                              for path in run_files("metrics.json", task=task)]


def rehearsal_rows():
    """rehearsal: the row of every fine-tuning job's rehearsal (rehearsal.partitions: first, of
    one partition per task x model x method)."""
    return [f"{REHEARSAL_PATTERN.format(results=R, task=run.task, model=run.model, method=run.method, partition=run.partition)}/rehearsal.json"
            for run in dict.fromkeys(rehearsal_stand_ins(config).values())]


def all_outputs():
    tables = [f"{R}/summary.csv", f"{R}/table.csv", f"{R}/summary.parquet", f"{R}/comparisons.csv", f"{R}/ranks.csv",
              f"{R}/answer.md", f"{R}/leaderboard.html"]
    tables += [f"{R}/figures/ranks_{scope}.{ext}" for scope in [*RUN_MODELS, "all_models"] for ext in ("png", "svg")]
    figures = [
        f"{R}/figures/{task}/{name}.{ext}"
        for task in RUN_TASKS
        for name in [*(f"pareto_{axis}" for axis in AXES), "mcc_over_time"]
        for ext in ("png", "svg")
    ]
    # what a task's kind adds (seqpeft.tasks: TaskKind.outputs), e.g. the signal-peptide table and figures
    by_kind = [f"{R}/{output.format(task=task)}" for task in RUN_TASKS
               for output in task_kind(config["tasks"][task]["kind"]).outputs]
    return tables + figures + list(dict.fromkeys(by_kind)) + reproduction_outputs()


def reproduction_outputs():
    if not PUBLISHED:
        return []
    return [f"{R}/reproduction.csv", f"{R}/figures/reproduction.png", f"{R}/figures/reproduction.svg"]


# ---- resources: fine-tuning jobs scale with the model's size and grow on every retry ----


@cache
def _processes(model, method):
    return world_size_of(config, model, method)


def finetune_processes(wildcards):
    """Processes of one fine-tuning job: its GPUs when several, else training.processes (CPU)."""
    return _processes(wildcards.model, wildcards.method)


def finetune_threads_of(wildcards):
    # resources.finetune_threads per process; SLURM gets them as --cpus-per-task
    return FINETUNE_THREADS * finetune_processes(wildcards)


# gpu_model only where the config names one (an empty value would reach sbatch otherwise)
FINETUNE_GPU_MODEL = (
    {"gpu_model": lambda wildcards: str(size_resources(config, wildcards.model).get("gpu_model") or "")}
    if any("gpu_model" in (spec or {}) for spec in config["resources"].get("sizes", {}).values())
    else {}
)


def finetune_mem_mb(wildcards, attempt):
    # CPU processes each hold the model, its gradients and optimizer state in host memory; a
    # multi-GPU job's mem_mb (resources.sizes) is already for the whole job
    resources = size_resources(config, wildcards.model)
    processes = finetune_processes(wildcards) if int(resources["gpu"]) <= 1 else 1
    return int(resources["mem_mb"]) * processes * attempt


# rehearsal.runtime_from_estimate (opt-in): a fine-tuning job asks for its rehearsal's estimate
# with a margin instead of its size's runtime (seqpeft.preflight.plan reads the estimates)
ESTIMATES = (rehearsal_estimates(config) or {}) if config["rehearsal"]["runtime_from_estimate"] else {}


def finetune_runtime(wildcards, attempt):
    """Minutes a fine-tuning job asks for: its size's runtime, or (opted in) its rehearsal's
    estimate x rehearsal.runtime_margin, at least 10; times the attempt number."""
    estimate = ESTIMATES.get((wildcards.task, wildcards.model, wildcards.method, wildcards.partition))
    if estimate is None:
        return int(size_resources(config, wildcards.model)["runtime"]) * attempt
    return max(10, math.ceil(estimate / 60 * float(config["rehearsal"]["runtime_margin"]))) * attempt


def rehearsal_runtime(wildcards, attempt):
    """Minutes a rehearsal job asks for: rehearsal.runtime, at most its fine-tuning job's own."""
    return min(int(config["rehearsal"]["runtime"]), int(size_resources(config, wildcards.model)["runtime"])) * attempt


FAMILY_TITLES = {"dna": "DNA", "protein": "protein"}


def task_score(wildcards):
    """The headline metric of a task's kind (MCC; Spearman for regression): what its figures plot."""
    return task_kind(config["tasks"][wildcards.task]["kind"]).score


def task_family(wildcards):
    """The report category of a task's figures: its family (DNA or protein)."""
    return FAMILY_TITLES.get(config["tasks"][wildcards.task].get("family"), "other tasks")
