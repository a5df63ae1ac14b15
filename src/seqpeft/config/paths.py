"""Where every result lives: one home for the paths that the rules declare and the library reads.

Pure Python, imported by the Snakefile while parsing (``workflow/rules/common.smk``) and by the
library; a path is spelled here once, as a pattern with ``{wildcards}`` (``*_PATTERN``) and as a
function of a config and names.
"""

from __future__ import annotations

from pathlib import Path

from seqpeft.util.errors import SeqpeftInputError
from seqpeft.config.schema import default
from seqpeft.core.registry import task_kind

RUN_PATTERN = "{results}/runs/{task}/{model}/{method}/{partition}"
# The study of a run; its partition is the tuning partition (``tuning_partition``).
TUNING_PATTERN = "{results}/tuning/{task}/{model}/{method}/{partition}"
# A run's rehearsal (``seqpeft rehearse``): apart from the real run's folder, which it never touches.
REHEARSAL_PATTERN = "{results}/rehearsal/runs/{task}/{model}/{method}/{partition}"


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


def rehearsal_table(config: dict) -> str:
    """``rehearsal.csv``: one row per fine-tuning job's rehearsal (``seqpeft.preflight.rehearse``)."""
    return f"{results_dir(config)}/rehearsal.csv"


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


# Beside the results: which config file last ran a workflow there (written when a run starts).
RESULTS_OWNER = ".seqpeft-config"


def results_owner_note(config: dict, configfiles) -> str | None:
    """A warning when the results folder was last run with another config file: two configs
    sharing one ``results:`` overwrite each other's summary, and run at once they write the same
    run folders. None when the folder is new or the config is the same file."""
    configfiles = list(configfiles or [])
    marker = Path(results_dir(config)) / RESULTS_OWNER
    if not configfiles or not marker.is_file():
        return None
    previous, current = marker.read_text().strip(), str(Path(configfiles[-1]).resolve())
    if previous == current:
        return None
    return (f"{marker.parent}: results: is shared with config {previous}, which last ran here; this run uses "
            f"{current}. Both write the same summary and run folders (at once, into the same files). Fix: give "
            f"each config its own results: folder, or delete {marker} if this config now owns the folder.")


def claim_results(config: dict, configfiles) -> None:
    """Record which config file runs the workflow in the results folder (``results_owner_note``)."""
    from seqpeft.util.atomic import write_text_atomic

    configfiles = list(configfiles or [])
    if not configfiles:
        return
    marker, owner = Path(results_dir(config)) / RESULTS_OWNER, str(Path(configfiles[-1]).resolve()) + "\n"
    if not marker.is_file() or marker.read_text() != owner:  # unchanged: left alone (its mtime too)
        write_text_atomic(marker, owner)
