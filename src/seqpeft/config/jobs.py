"""The job matrix and each job's slice of the config.

``expand_runs`` lists the fine-tuning jobs of the experiment blocks; the other functions give one
job exactly the settings it reads (its task, model, method and training entries, canonicalised),
so that editing one entry reruns only the jobs that read it. Pure Python (the Snakefile imports it).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from seqpeft.util.errors import SeqpeftInputError
from seqpeft.config.paths import results_dir, section, tokenizer_of
from seqpeft.config.schema import ENTRY, with_defaults
from seqpeft.config.settings import TUNED_KEYS


# Keys that only domain-shift prompting reads: kept out of the other jobs' params so that editing
# a template or a nucleotide id reruns only the DSP jobs.
TASK_DSP_KEYS = ("domain", "dsp_template")

MODEL_DSP_KEYS = ("dsp_nucleotide_ids",)


@dataclass(frozen=True, order=True)
class Run:
    """One fine-tuning job of the matrix."""

    task: str
    model: str
    method: str
    partition: str


def expand_runs(config: dict) -> list[Run]:
    """Every (task, model, method, partition) of the experiment blocks, deduplicated, in block order."""
    tasks = section(config, "tasks")
    runs: dict[Run, None] = {}
    for block in config.get("experiments") or []:
        for task in block["tasks"]:
            for model in block["models"]:
                for method in block["methods"]:
                    for partition in tasks[task]["partitions"]:
                        runs.setdefault(Run(task, model, method, str(partition)), None)
    return list(runs)


def rehearsal_stand_ins(config: dict) -> dict[Run, Run]:
    """Each fine-tuning job -> the job whose rehearsal measures it: itself, or with
    ``rehearsal.partitions: first`` the first partition of its task x model x method (replicate
    seeds train on the same data; cross-validation folds on other splits of the same file)."""
    runs = expand_runs(config)
    if with_defaults(config.get("rehearsal"), "rehearsal")["partitions"] != "first":
        return {run: run for run in runs}
    first: dict[tuple[str, str, str], Run] = {}
    for run in runs:
        first.setdefault((run.task, run.model, run.method), run)
    return {run: first[(run.task, run.model, run.method)] for run in runs}


def canonical(value: Any) -> Any:
    """``value`` with every mapping's keys sorted, so that reordering keys in the YAML file does not
    count as a change of a job's parameters."""
    if isinstance(value, dict):
        return {str(k): canonical(value[k]) for k in sorted(value, key=str)}
    if isinstance(value, (list, tuple)):
        return [canonical(v) for v in value]
    return value


def method_spec(config: dict, method: str) -> dict:
    """A method variant's arguments without its ``training:`` overrides and ``dsp:`` switch, with
    ``method:`` resolved to the registry name (unless the entry is a ``peft:`` pass-through)."""
    spec = dict(section(config, "methods")[method] or {})
    spec.pop("training", None)
    spec.pop("dsp", None)
    if spec.get("peft") is None:
        spec["method"] = str(spec.get("method", method))
    return canonical(spec)


def dsp_encoding(config: dict, method: str) -> str | None:
    """The DSP encoding a method variant trains with (its ``dsp.encoding``), or None without DSP."""
    spec = section(config, "methods").get(method) or {}
    dsp = spec.get("dsp")
    return None if dsp is None else str((dsp or {}).get("encoding"))


def dsp_settings(config: dict, task: str, model: str, encoding: str, max_length: int | None = None) -> dict:
    """Everything that decides a task's DSP encoding for one model (``seqpeft.methods.dsp.DspSettings``):
    the task's template and domain (default: the task name), the model's max_length and
    on_too_long, and for the nucleotide encoding the model's ``dsp_nucleotide_ids`` overrides;
    the schema's defaults where the entries leave them out."""
    task_entry = with_defaults(section(config, "tasks")[task], "tasks", ENTRY)
    model_entry = with_defaults(section(config, "models")[model], "models", ENTRY)
    ids = (model_entry.get("dsp_nucleotide_ids") or {}) if encoding == "nucleotide" else {}
    return canonical({
        "encoding": encoding,
        "template": str(task_entry["dsp_template"]),
        "domain": str(task_entry.get("domain") or task),
        "max_length": int(max_length or model_entry["max_length"]),
        "on_too_long": str(model_entry["on_too_long"]),
        "nucleotide_ids": {str(k): int(v) for k, v in ids.items()},
    })


def finetune_method_params(config: dict, task: str, model: str, method: str) -> dict:
    """A fine-tuning job's method params: ``method_spec``, plus for DSP variants ``dsp`` with the
    settings for this task and model (absent otherwise, so adding DSP reruns no other job)."""
    spec = method_spec(config, method)
    encoding = dsp_encoding(config, method)
    if encoding is not None:
        spec["dsp"] = dsp_settings(config, task, model, encoding, max_length_overrides(config).get((task, model, method)))
    return spec


def max_length_overrides(config: dict) -> dict[tuple[str, str, str], int]:
    """(task, model, method) -> the ``max_length`` its experiment block sets, for the runs whose block
    sets one other than the model's. A run listed by several blocks must get one length from all of
    them (a block without the key gives the model's own), since its results path does not name it."""
    blocks = config.get("experiments") or []
    if not any("max_length" in (block or {}) for block in blocks):
        return {}  # the common case, cheap: the workflow asks once per job
    models = section(config, "models")
    lengths: dict[tuple[str, str, str], tuple[int, int]] = {}
    for i, block in enumerate(blocks):
        override = (block or {}).get("max_length")
        for task in block.get("tasks") or []:
            for model in block.get("models") or []:
                length = int(override if override is not None else models[model]["max_length"])
                for method in block.get("methods") or []:
                    key = (task, model, method)
                    if key in lengths and lengths[key][0] != length:
                        raise SeqpeftInputError(
                            f"experiments[{i}].max_length", f"{task}/{model}/{method} is also in experiments[{lengths[key][1]}] "
                            f"with max_length {lengths[key][0]}, here {length}: one run cannot have two input lengths.",
                            fix="give both blocks the same max_length, or list the run in one of them.")
                    lengths.setdefault(key, (length, i))
    return {key: length for key, (length, _) in lengths.items() if length != int(models[key[1]]["max_length"])}


def run_max_length(config: dict, task: str, model: str, method: str) -> int:
    """The input length of a run: its experiment block's ``max_length``, else the model's."""
    return int(run_model_params(config, task, model, method)["max_length"])


def run_model_params(config: dict, task: str, model: str, method: str) -> dict:
    """``model_params`` with the run's experiment-block ``max_length``, if its block sets one."""
    spec = model_params(config, model)
    override = max_length_overrides(config).get((task, model, method))
    if override is not None:
        spec["max_length"] = override
    return spec


def dsp_cache_name(config: dict, task: str, model: str, method: str) -> str | None:
    """The DSP cache file of a run inside ``tokenized/{task}/`` (DSP inputs are encoded for one
    length, so an experiment-block length gets a cache of its own); None without DSP."""
    encoding = dsp_encoding(config, method)
    if encoding is None:
        return None
    override = max_length_overrides(config).get((task, model, method))
    return f"{model}.dsp-{encoding}" + (f".len{override}" if override is not None else "") + ".npz"


def task_params(config: dict, task: str) -> dict:
    """The task's spec minus its DSP keys (``domain``, ``dsp_template``), which only DSP jobs read."""
    spec = {k: v for k, v in (section(config, "tasks")[task] or {}).items() if k not in TASK_DSP_KEYS}
    return canonical(spec)


def training_for(config: dict, method: str) -> dict:
    """The global ``training`` settings updated with the method's ``training:`` overrides."""
    spec = section(config, "methods")[method] or {}
    return canonical({**(config.get("training") or {}), **(spec.get("training") or {})})


def training_key(config: dict, method: str, key: str) -> str:
    """Where a method's training setting comes from: its own ``training:`` override, or the global block."""
    override = ((section(config, "methods").get(method) or {}).get("training") or {})
    return f"methods.{method}.training.{key}" if key in override else f"training.{key}"


def model_params(config: dict, model: str) -> dict:
    """The model's spec minus ``size`` (a scheduling hint that must not force retraining) and its
    DSP nucleotide ids (they reach DSP jobs through ``dsp_settings``)."""
    spec = dict(section(config, "models")[model] or {})
    spec.pop("size", None)
    for key in MODEL_DSP_KEYS:
        spec.pop(key, None)
    return canonical(spec)


def download_sources(config: dict) -> list[str]:
    """Sources fetched by the download rule: a ``url`` and no ``local`` copy."""
    return [name for name, spec in section(config, "sources").items()
            if (spec or {}).get("url") is not None and (spec or {}).get("local") is None]


def derived_sources(config: dict) -> list[str]:
    """Sources the derive rule writes from another source's file (seqpeft.tasks.signal_peptide.derived)."""
    return [name for name, spec in section(config, "sources").items() if (spec or {}).get("derive") is not None]


def synthetic_sources(config: dict) -> list[str]:
    return [name for name, spec in section(config, "sources").items() if (spec or {}).get("synthetic") is not None]


def prepared_models(config: dict) -> list[str]:
    """Models that the prepare rule materialises (``hub`` and ``build``; ``path:`` models are used in place)."""
    return [name for name, spec in section(config, "models").items() if (spec or {}).get("path") is None]


def tuning_training(config: dict, method: str) -> dict:
    """A run's training settings as its tuning study sees them: without the values it chooses."""
    return {key: value for key, value in training_for(config, method).items() if key not in (*TUNED_KEYS, "hpo")}


def finetune_spec(config: dict, task: str, model: str, method: str) -> dict:
    """A fine-tuning job's params, as one value (Snakemake wraps every param function of every
    job, so one call per job instead of four): its task, model, method and training settings."""
    return {"task": task_params(config, task), "model": run_model_params(config, task, model, method),
            "method": finetune_method_params(config, task, model, method), "training": training_for(config, method)}


def tune_trials_spec(config: dict, task: str, model: str, method: str) -> dict:
    """A tuning trial job's params: as ``finetune_spec``, with the training settings its study sees."""
    return {**finetune_spec(config, task, model, method), "training": tuning_training(config, method)}


def training_cache(config: dict, task: str, model: str, method: str) -> str:
    """The tokenized cache a fine-tuning (or rehearsal, or tuning-trial) job of this run reads: the
    task tokenized with the model's tokenizer, or, for a DSP variant, with the task's template."""
    name = dsp_cache_name(config, task, model, method)
    return f"{results_dir(config)}/tokenized/{task}/" + (f"{tokenizer_of(config, model)}.npz" if name is None else name)
