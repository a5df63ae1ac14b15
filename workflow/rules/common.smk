import re
from functools import cache

from seqpeft.config import (
    canonical,
    download_sources,
    dsp_cache_name,
    dsp_encoding,
    dsp_settings,
    expand_runs,
    finetune_method_params,
    finetune_threads,
    hpo_params,
    hpo_settings,
    model_dir,
    model_params,
    prepared_models,
    results_dir,
    run_model_params,
    size_resources,
    source_dir,
    synthetic_sources,
    task_data_path,
    task_params,
    tokenizer_dir,
    tokenizer_of,
    training_for,
    tune_trials_runtime,
    tuning_dir,
    tuning_training,
    world_size_of,
)
from seqpeft.dsp import ENCODINGS

R = results_dir(config)
RUNS = expand_runs(config)
RUN_TASKS = list(dict.fromkeys(run.task for run in RUNS))
AXES = list(config["figures"]["pareto_axes"])
FINETUNE_THREADS = finetune_threads(config)
RUN_DIR = f"{R}/runs/{{task}}/{{model}}/{{method}}/{{partition}}"
# The study of a run; its partition is the tuning partition (seqpeft.config.tuning_partition).
TUNE_DIR = f"{R}/tuning/{{task}}/{{model}}/{{method}}/{{partition}}"
TRIAL_JOBS = hpo_settings(config).trial_jobs


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
    trial_job=one_of(range(TRIAL_JOBS)),
    encoding=one_of(ENCODINGS),


DOWNLOADED_SOURCE = one_of(download_sources(config))
SYNTHETIC_SOURCE = one_of(synthetic_sources(config))
BUILT_TOKENIZER = one_of(config["tokenizers"])
PREPARED_MODEL = one_of(prepared_models(config))


# ---- parameters: only each job's own slice of the config, so unrelated edits rerun nothing ----


def source_spec(wildcards):
    return canonical(config["sources"][wildcards.source])


def tokenizer_spec(wildcards):
    return canonical(config["tokenizers"][wildcards.tokenizer])


# Each is computed once per name: thousands of jobs share a handful of models, tasks and methods.
@cache
def _model_params(model):
    return model_params(config, model)


@cache
def _run_model_params(task, model, method):
    # the model's spec with its experiment block's max_length, where the block sets one
    return run_model_params(config, task, model, method)


@cache
def _task_spec(task):
    return task_params(config, task)


@cache
def _finetune_method_params(task, model, method):
    return finetune_method_params(config, task, model, method)


@cache
def _training_for(method):
    return training_for(config, method)


def model_spec(wildcards):
    return _model_params(wildcards.model)


def task_spec(wildcards):
    return _task_spec(wildcards.task)


def data_path(wildcards):
    return task_data_path(config, wildcards.task)


def method_args(wildcards):
    """The method variant's arguments; DSP variants add the task x model DSP settings."""
    return _finetune_method_params(wildcards.task, wildcards.model, wildcards.method)


def dsp_spec(wildcards):
    return dsp_settings(config, wildcards.task, wildcards.model, wildcards.encoding,
                        int(wildcards.length) if "length" in wildcards.keys() else None)


def training_settings(wildcards):
    return _training_for(wildcards.method)


def hpo_args(wildcards):
    return hpo_params(config)


def tuning_training_settings(wildcards):
    return tuning_training(config, wildcards.method)


def finetune_spec(wildcards):
    """finetune: the task, model and method specs and the training settings, as one param:
    Snakemake wraps every param function of every job, so one call per job instead of four."""
    return {"task": task_spec(wildcards),
            "model": _run_model_params(wildcards.task, wildcards.model, wildcards.method),
            "method": method_args(wildcards), "training": training_settings(wildcards)}


def tune_trials_spec(wildcards):
    """tune_trials: as finetune_spec, with the tuning study's training settings."""
    return {**finetune_spec(wildcards), "training": tuning_training_settings(wildcards)}


# ---- inputs ----


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
    name = dsp_cache_name(config, wildcards.task, wildcards.model, wildcards.method)
    if name is None:
        cache = f"{R}/tokenized/{wildcards.task}/{tokenizer_of(config, wildcards.model)}.npz"
    else:
        cache = f"{R}/tokenized/{wildcards.task}/{name}"
    return {"cache": cache, "model": model_dir(config, wildcards.model)}


def finetune_input(wildcards):
    """finetune: what training needs, and the tuning study's best_params.json when training says hpo."""
    inputs = training_input(wildcards)
    if _training_for(wildcards.method).get("hpo"):
        study = tuning_dir(config, wildcards.task, wildcards.model, wildcards.method, wildcards.partition)
        inputs["best_params"] = f"{study}/best_params.json"
    return inputs


def tune_trial_markers(wildcards):
    """tune: the summary of every trial job of the study."""
    return expand(f"{TUNE_DIR}/trials/{{trial_job}}.json", **dict(wildcards.items()), trial_job=range(TRIAL_JOBS))


def run_files(name, task=None):
    """One file of every run dir of the matrix (optionally of one task only)."""
    return [
        f"{R}/runs/{run.task}/{run.model}/{run.method}/{run.partition}/{name}"
        for run in RUNS
        if task is None or run.task == task
    ]


def signalp_tasks():
    return [task for task in RUN_TASKS if config["tasks"][task].get("kind") == "signal_peptide"]


def signalp_run_metrics(wildcards):
    return [path for task in signalp_tasks() for path in run_files("metrics.json", task=task)]


def signalp_outputs():
    if not signalp_tasks():
        return []
    names = ("signalp_mcc", "signalp_cleavage_w0")
    figures = [f"{R}/figures/{task}/{name}.{ext}" for task in signalp_tasks() for name in names for ext in ("png", "svg")]
    return [f"{R}/signalp_table.csv", *figures]


def task_histories(wildcards):
    return run_files("history.csv", task=wildcards.task)


def all_outputs():
    tables = [f"{R}/summary.csv", f"{R}/table.csv", f"{R}/summary.parquet"]
    figures = [
        f"{R}/figures/{task}/{name}.{ext}"
        for task in RUN_TASKS
        for name in [*(f"pareto_{axis}" for axis in AXES), "mcc_over_time"]
        for ext in ("png", "svg")
    ]
    return tables + figures + signalp_outputs()


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


def finetune_gpu(wildcards):
    return int(size_resources(config, wildcards.model)["gpu"])


def finetune_gpu_model(wildcards):
    return str(size_resources(config, wildcards.model).get("gpu_model") or "")


# gpu_model only where the config names one (an empty value would reach sbatch otherwise)
FINETUNE_GPU_MODEL = (
    {"gpu_model": finetune_gpu_model}
    if any("gpu_model" in (spec or {}) for spec in config["resources"].get("sizes", {}).values())
    else {}
)


def finetune_mem_mb(wildcards, attempt):
    # CPU processes each hold the model, its gradients and optimizer state in host memory; a
    # multi-GPU job's mem_mb (resources.sizes) is already for the whole job
    resources = size_resources(config, wildcards.model)
    processes = finetune_processes(wildcards) if int(resources["gpu"]) <= 1 else 1
    return int(resources["mem_mb"]) * processes * attempt


def finetune_runtime(wildcards, attempt):
    return int(size_resources(config, wildcards.model)["runtime"]) * attempt


def trial_job_mem_mb(wildcards, attempt):
    # a tuning trial trains in one process, whatever training.processes says (seqpeft.train.run_finetune)
    return int(size_resources(config, wildcards.model)["mem_mb"]) * attempt


def trial_job_runtime(wildcards, attempt):
    return tune_trials_runtime(config, wildcards.model, wildcards.method) * attempt


def prepare_mem_mb(wildcards, attempt):
    return int(size_resources(config, wildcards.model)["mem_mb"]) * attempt


FAMILY_TITLES = {"dna": "DNA", "protein": "protein"}


def task_family(wildcards):
    """The report category of a task's figures: its family (DNA or protein)."""
    return FAMILY_TITLES.get(config["tasks"][wildcards.task].get("family"), "other tasks")


# ---- declared signatures: Snakemake calls inspect.signature on every input, params and
# resources function once per job and use, and on its own Resource.evaluate for every resource of
# every job (together about a third of a 5,000-job dry run); declaring the parameter names up
# front (Snakemake's own overwrite_function_params) skips that. ----


def _declare_signatures(*functions):
    from inspect import signature

    from snakemake.common import overwrite_function_params

    for function in functions:
        overwrite_function_params(function, signature(function).parameters)


def _snakemake_resource_evaluator():
    from snakemake.resources import Resource

    return Resource.evaluate


_declare_signatures(
    _snakemake_resource_evaluator(),
    source_spec, tokenizer_spec, model_spec, task_spec, data_path, dsp_spec, hpo_args, finetune_spec, tune_trials_spec,
    model_tokenizer_input, tokenize_input, tokenize_dsp_input, training_input, finetune_input, tune_trial_markers,
    task_histories,
    finetune_processes, finetune_threads_of, finetune_gpu, finetune_gpu_model, finetune_mem_mb, finetune_runtime,
    trial_job_mem_mb, trial_job_runtime, prepare_mem_mb,
)
