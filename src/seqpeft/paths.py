"""Where every result lives: one home for the paths that the rules declare and the library reads.

Pure Python, imported by the Snakefile while parsing (``workflow/rules/common.smk``) and by the
library; a path is spelled here once, as a pattern with ``{wildcards}`` (``*_PATTERN``) and as a
function of a config and names.
"""

from __future__ import annotations

from pathlib import Path

from seqpeft.errors import SeqpeftInputError
from seqpeft.schema import default
from seqpeft.tasks import task_kind

RUN_PATTERN = "{results}/runs/{task}/{model}/{method}/{partition}"
# The study of a run; its partition is the tuning partition (``tuning_partition``).
TUNING_PATTERN = "{results}/tuning/{task}/{model}/{method}/{partition}"


def section(config: dict, key: str) -> dict:
    """A mapping section of the config (sources, tasks, models, ...), or a named error."""
    value = config.get(key) or {}
    if not isinstance(value, dict):
        raise SeqpeftInputError(key, f"must be a mapping of names to entries, got {type(value).__name__}.")
    return value


def wildcard_pattern(pattern: str, config: dict) -> str:
    """``pattern`` with the results directory filled in and the other fields left as wildcards."""
    return pattern.replace("{results}", results_dir(config))


def results_dir(config: dict) -> str:
    return str(config.get("results") or default("results"))


def tokenizer_of(config: dict, model: str) -> str:
    """The tokenizer key a model uses: its ``tokenizer:`` entry, else the model's own name."""
    spec = section(config, "models")[model] or {}
    return str(spec.get("tokenizer") or model)


def model_dir(config: dict, model: str) -> str:
    """Where the model is loaded from: the ``path:`` of local models, else ``{results}/models/{model}``."""
    spec = section(config, "models")[model] or {}
    if spec.get("path") is not None:
        return str(spec["path"])
    return f"{results_dir(config)}/models/{model}"


def source_dir(config: dict, source: str) -> str:
    """The source's directory: its ``local`` copy if set, else ``{results}/sources/{source}``."""
    spec = section(config, "sources")[source] or {}
    if spec.get("local") is not None:
        return str(spec["local"])
    return f"{results_dir(config)}/sources/{source}"


def task_data_path(config: dict, task: str) -> str:
    """The task's data inside its source: a folder of train/dev/test.csv or a FASTA file.

    A ``local`` copy of an ``archive: none`` source may be the file itself rather than a folder
    holding it; then that file is the data.
    """
    spec = section(config, "tasks")[task]
    source = section(config, "sources")[spec["source"]] or {}
    base = source_dir(config, spec["source"])
    if source.get("local") is not None and source.get("archive") == "none" and Path(base).is_file():
        return base
    return str(Path(base) / spec["path"])


def tokenizer_dir(config: dict, tokenizer: str) -> str:
    """Directory of a tokenizer key: a built tokenizer, or the directory of the model of that name."""
    if tokenizer in section(config, "tokenizers"):
        return f"{results_dir(config)}/tokenizers/{tokenizer}"
    return model_dir(config, tokenizer)


def tuning_partition(config: dict, task: str, partition: str) -> str:
    """The partition whose dev split tunes the run of ``partition``.

    A cross-validation fold tunes on its own validation partition: any other fold's would be this
    fold's test data. Replicate seeds share one dev split, so the task's first partition tunes them all.
    """
    spec = section(config, "tasks")[task]
    if task_kind(spec["kind"]).partitions.tunes_on_own_partition:
        return str(partition)
    return str(spec["partitions"][0])


def tuning_dir(config: dict, task: str, model: str, method: str, partition: str) -> str:
    """Where the study of a run lives: trial results (``trials/``), ``best_params.json``, logs."""
    return TUNING_PATTERN.format(results=results_dir(config), task=task, model=model, method=method,
                                 partition=tuning_partition(config, task, partition))
