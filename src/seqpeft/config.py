"""Cross-reference checks and job-matrix expansion for the workflow config.

Pure Python on purpose: the Snakefile imports this module while parsing, and every cluster job
re-parses the workflow, so nothing here may import torch, transformers or peft.

The JSON schema (``workflow/schemas/config.schema.yaml``) checks types and spelling of keys;
``check_config`` checks what a schema cannot: that names refer to things that exist, that hub
models are pinned, that cross-validation folds are well formed. Every problem is raised as a
``SeqpeftInputError`` whose "path" is the config key path, e.g.
``experiments[0].models: unknown model 'mistral_dn'; known: ...``.
"""

from __future__ import annotations

import difflib
import math
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from seqpeft.dsp import DEFAULT_TEMPLATE, ENCODINGS, template_problem
from seqpeft.errors import SeqpeftInputError
from seqpeft.tune import TUNED_KEYS, HpoSettings

try:  # the registry module is light by design (no torch at import time)
    from seqpeft.methods import METHOD_NAMES
except ImportError:  # pragma: no cover - only while the registry module is missing
    METHOD_NAMES = ("full", "frozen", "lora", "adalora", "prompt_tuning", "prefix_tuning", "p_tuning", "ia3")

TASK_KINDS = ("sequence_classification", "signal_peptide")
MODEL_SOURCES = ("hub", "path", "build")
SIZES = ("tiny", "small", "medium", "large", "xlarge")
FOLD_RE = re.compile(r"^t([0-2])v([0-2])$")
REVISION_RE = re.compile(r"^[0-9a-f]{40}$")
NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
DEFAULT_MAX_LENGTH = 512
# Keys that only domain-shift prompting reads: kept out of the other jobs' params so that editing
# a template or a nucleotide id reruns only the DSP jobs.
TASK_DSP_KEYS = ("domain", "dsp_template")
MODEL_DSP_KEYS = ("dsp_nucleotide_ids",)

# Cluster resources per model size; ``config["resources"]["sizes"]`` overrides entries key by key.
# mem_mb and runtime (minutes) are the first attempt's values; the workflow multiplies them by the
# attempt number so that a retried job (out of memory, time limit) asks for more.
DEFAULT_SIZE_RESOURCES: dict[str, dict[str, Any]] = {
    "tiny": {"gpu": 0, "mem_mb": 4000, "runtime": 30},
    "small": {"gpu": 1, "mem_mb": 16000, "runtime": 240},
    "medium": {"gpu": 1, "mem_mb": 32000, "runtime": 480},
    "large": {"gpu": 1, "mem_mb": 64000, "runtime": 720},
    "xlarge": {"gpu": 1, "mem_mb": 128000, "runtime": 1440},
}
DEFAULT_FINETUNE_THREADS = 2


@dataclass(frozen=True, order=True)
class Run:
    """One fine-tuning job of the matrix."""

    task: str
    model: str
    method: str
    partition: str


def _fail(path: str, problem: str, fix: str = "") -> None:
    raise SeqpeftInputError(path, problem, fix=fix)


def _unknown(path: str, what: str, name: Any, known: dict | list | tuple) -> None:
    known = sorted(known)
    close = difflib.get_close_matches(str(name), known, n=1)
    fix = f"did you mean {close[0]!r}?" if close else f"define {what} {name!r} or use a known one."
    _fail(path, f"unknown {what} {name!r}; known: {', '.join(known) or '(none)'}.", fix)


def _section(config: dict, key: str) -> dict:
    value = config.get(key) or {}
    if not isinstance(value, dict):
        _fail(key, f"must be a mapping of names to entries, got {type(value).__name__}.")
    return value


def registry_method(config: dict, method: str) -> str:
    """The registry name a method variant uses (its ``method:`` key, else its own name)."""
    spec = _section(config, "methods").get(method) or {}
    return str(spec.get("method", method))


def check_config(config: dict) -> None:
    """Raise ``SeqpeftInputError`` naming the key path of the first inconsistency in ``config``."""
    sources = _section(config, "sources")
    tasks = _section(config, "tasks")
    tokenizers = _section(config, "tokenizers")
    models = _section(config, "models")
    methods = _section(config, "methods")

    for section, entries in (("sources", sources), ("tasks", tasks), ("tokenizers", tokenizers),
                             ("models", models), ("methods", methods)):
        for name in entries:
            if not NAME_RE.match(str(name)):
                _fail(f"{section}.{name}", "names are used in file paths and may contain only letters, digits, "
                      "'_', '-' and '.', starting with a letter or digit.")

    for name, spec in sources.items():
        path = f"sources.{name}"
        spec = spec or {}
        kinds = [k for k in ("url", "local", "synthetic") if spec.get(k) is not None]
        if "synthetic" in kinds and len(kinds) > 1:
            _fail(path, "a synthetic source cannot also have 'url' or 'local'.")
        if not kinds:
            _fail(path, "needs 'url' (downloaded), 'local' (pre-staged copy) or 'synthetic' (generated).")
        if spec.get("url") is not None and not spec.get("sha256"):
            _fail(f"{path}.sha256", "a downloaded source needs the sha256 of the file it downloads.",
                  "set it from a trusted copy (sha256sum FILE).")
        if spec.get("url") is not None and spec.get("local") is None and spec.get("archive") == "none" \
                and not spec.get("filename"):
            _fail(f"{path}.filename", "a source with 'archive: none' needs the file name to save the download as.")

    for name, spec in tasks.items():
        path = f"tasks.{name}"
        spec = spec or {}
        if spec.get("source") not in sources:
            _unknown(f"{path}.source", "source", spec.get("source"), sources)
        kind = spec.get("kind", "sequence_classification")
        if kind not in TASK_KINDS:
            _fail(f"{path}.kind", f"unknown task kind {kind!r}; known: {', '.join(TASK_KINDS)}.")
        if spec.get("signal_peptide") and kind != "signal_peptide":
            _fail(f"{path}.signal_peptide", f"applies to signal_peptide tasks only, not {kind!r}.", "delete it from this task.")
        partitions = spec.get("partitions") or []
        if not partitions:
            _fail(f"{path}.partitions", "needs at least one partition.")
        if len(set(map(str, partitions))) != len(partitions):
            _fail(f"{path}.partitions", f"lists a partition twice: {partitions}.")
        for i, part in enumerate(partitions):
            if kind == "signal_peptide":
                match = FOLD_RE.match(str(part))
                if not match or match.group(1) == match.group(2):
                    _fail(f"{path}.partitions[{i}]",
                          f"{part!r} is not a cross-validation fold t{{T}}v{{V}} with T != V in 0..2.",
                          "use t0v1, t0v2, t1v0, t1v2, t2v0 or t2v1 (test partition T, validation partition V).")
            elif isinstance(part, bool) or not isinstance(part, int) or part < 0:
                _fail(f"{path}.partitions[{i}]",
                      f"{part!r} is not a replicate seed; sequence_classification partitions are integers >= 0.")
        if spec.get("dsp_template") is not None:
            problem = template_problem(str(spec["dsp_template"]))
            if problem:
                _fail(f"{path}.dsp_template", f"{spec['dsp_template']!r} {problem}",
                      f"e.g. {DEFAULT_TEMPLATE!r} (the default).")

    for name, spec in tokenizers.items():
        if name in models and "tokenizer" not in (models[name] or {}):
            _fail(f"tokenizers.{name}", f"the name is also a model that uses its own tokenizer, so "
                  f"'{name}' would name two tokenizers.", "rename the tokenizer.")

    for name, spec in models.items():
        path = f"models.{name}"
        spec = spec or {}
        given = [k for k in MODEL_SOURCES if spec.get(k) is not None]
        if len(given) != 1:
            _fail(path, f"needs exactly one of hub, path, build; got {', '.join(given) or 'none'}.")
        if "hub" in given:
            revision = spec.get("revision")
            if not revision:
                _fail(f"{path}.revision", "a hub model needs a pinned revision (40-hex commit).",
                      f"look it up with `huggingface-cli repo info {spec['hub']}` or on the model page.")
            if spec.get("trust_remote_code") and not REVISION_RE.match(str(revision)):
                _fail(f"{path}.revision", f"trust_remote_code runs the model repository's code, so the revision must "
                      f"be a full 40-hex commit, not {revision!r}.")
        if spec.get("tokenizer") is not None and spec["tokenizer"] not in tokenizers:
            _unknown(f"{path}.tokenizer", "tokenizer", spec["tokenizer"], tokenizers)
        if "build" in given and spec.get("tokenizer") is None:
            _fail(f"{path}.tokenizer", "a config-built model has no tokenizer of its own.",
                  f"name one of the tokenizers: {', '.join(sorted(tokenizers)) or '(define one under tokenizers)'}.")
        if spec.get("size") is not None and spec["size"] not in SIZES:
            _fail(f"{path}.size", f"unknown size {spec['size']!r}; known: {', '.join(SIZES)}.")

    for name, spec in methods.items():
        spec = spec or {}
        if spec.get("dsp") is not None and (spec["dsp"] or {}).get("encoding") not in ENCODINGS:
            _fail(f"methods.{name}.dsp.encoding", f"unknown DSP encoding {(spec['dsp'] or {}).get('encoding')!r}; "
                  f"known: {', '.join(ENCODINGS)}.")
        if spec.get("peft") is not None:
            continue  # pass-through to any peft config class
        registry = spec.get("method", name)
        if registry not in METHOD_NAMES:
            where = f"methods.{name}.method" if "method" in spec else f"methods.{name}"
            _unknown(where, "method", registry, METHOD_NAMES)

    experiments = config.get("experiments") or []
    if not experiments:
        _fail("experiments", "lists no experiment blocks, so there is nothing to run.")
    for i, block in enumerate(experiments):
        for key, known, what in (("tasks", tasks, "task"), ("models", models, "model"), ("methods", methods, "method")):
            names = (block or {}).get(key) or []
            if not names:
                _fail(f"experiments[{i}].{key}", f"lists no {key}.")
            for name in names:
                if name not in known:
                    _unknown(f"experiments[{i}].{key}", what, name, known)

    _check_local_paths(sources, models)
    max_length_overrides(config)
    _check_applicability(config, models, methods, experiments)
    HpoSettings.from_dict(config.get("hpo"))
    _check_processes(config, tasks, models, methods, experiments)

    axes = ((config.get("figures") or {}).get("pareto_axes")) or []
    for i, axis in enumerate(axes):
        if axis not in ("params", "memory", "time"):
            _fail(f"figures.pareto_axes[{i}]", f"unknown axis {axis!r}; known: params, memory, time.")


# Families whose models lack past-key-values support, so peft prefix tuning cannot apply.
NO_PREFIX_FAMILIES = ("esm",)
MAX_GPUS_PER_JOB = 8


def _check_local_paths(sources: dict, models: dict) -> None:
    """Pre-staged data and local models must exist before thousands of jobs are planned on them."""
    for name, spec in sources.items():
        local = (spec or {}).get("local")
        if local is not None and not Path(local).exists():
            _fail(f"sources.{name}.local", f"the pre-staged path {local!r} does not exist.",
                  "stage the data there, or remove 'local' to download it.")
    for name, spec in models.items():
        local = (spec or {}).get("path")
        if local is not None and not (Path(local) / "config.json").is_file():
            _fail(f"models.{name}.path", f"{local!r} is not a model directory (missing, or no config.json in it).",
                  "point it at a directory written by save_pretrained.")


def _check_applicability(config: dict, models: dict, methods: dict, experiments: list) -> None:
    """Method x model pairs that cannot work, and resource requests no job can satisfy."""
    device = (config.get("training") or {}).get("device", "auto")
    tasks = _section(config, "tasks")
    for i, block in enumerate(experiments):
        for method in (block or {}).get("methods") or []:
            if dsp_encoding(config, method) is None:
                continue
            for task in (block or {}).get("tasks") or []:
                kind = (tasks.get(task) or {}).get("kind", "sequence_classification")
                if kind != "sequence_classification":
                    _fail(f"experiments[{i}].methods", f"{method!r} uses domain-shift prompting, which applies to "
                          f"sequence_classification tasks only; task {task!r} is {kind} (per-residue labels cannot "
                          "follow a text template).", f"drop {method!r} from this block or move it to a block without {task!r}.")
        for model in (block or {}).get("models") or []:
            family = ((models.get(model) or {}).get("build") or {}).get("family") or (models.get(model) or {}).get("family")
            for method in (block or {}).get("methods") or []:
                registry = (methods.get(method) or {}).get("method", method)
                if registry == "prefix_tuning" and family in NO_PREFIX_FAMILIES:
                    _fail(f"experiments[{i}].methods", f"prefix_tuning does not apply to model {model!r} "
                          f"({family} models have no past-key-values support).",
                          "drop prefix_tuning for this model (use prompt_tuning or p_tuning).")
            gpus = int(size_resources(config, model)["gpu"]) if model in models else 0
            if gpus > MAX_GPUS_PER_JOB:
                _fail(f"resources.sizes.{model_size(config, model)}.gpu",
                      f"{gpus} GPUs per job exceed one node ({MAX_GPUS_PER_JOB}).", "ask for at most 8.")
            if gpus > 0 and device == "cpu":
                _fail("training.device", f"is 'cpu' but model {model!r} asks for {gpus} GPU(s) per job, "
                      "which would hold GPUs that nothing uses.", "set training.device: auto, or size: tiny for CPU models.")


def _training_key(config: dict, method: str, key: str) -> str:
    """Where a method's training setting comes from: its own ``training:`` override, or the global block."""
    override = ((_section(config, "methods").get(method) or {}).get("training") or {})
    return f"methods.{method}.training.{key}" if key in override else f"training.{key}"


def _check_processes(config: dict, tasks: dict, models: dict, methods: dict, experiments: list) -> None:
    """Multi-process jobs: CPU processes or GPUs (not both), enough batch for every rank, FSDP only
    where parameters may be sharded."""
    from seqpeft.distributed import setup_problem, world_size
    from seqpeft.methods import passthrough_method, resolve_method

    for block in experiments:
        for model in (block or {}).get("models") or []:
            gpus = int(size_resources(config, model)["gpu"])
            for method in (block or {}).get("methods") or []:
                settings = training_for(config, method)
                try:
                    world = world_size(int(settings.get("processes", 1)), gpus, str(settings.get("device", "auto")))
                except SeqpeftInputError as error:
                    _fail(_training_key(config, method, "processes"), f"{error.problem} (model {model!r})", error.fix)
                if world <= 1:
                    continue
                spec = method_spec(config, method)
                entry = passthrough_method(spec["peft"]) if "peft" in spec else resolve_method(method, spec)[0]
                for task in (block or {}).get("tasks") or []:
                    kind = str((tasks.get(task) or {}).get("kind", "sequence_classification"))
                    problem = setup_problem(world, int(settings.get("batch_size", world)),
                                            str(settings.get("distributed", "ddp")), entry, kind)
                    if problem:
                        _fail(_training_key(config, method, problem[0]),
                              f"{problem[1]} (model {model!r}, method {method!r}, task {task!r})", problem[2])


def world_size_of(config: dict, model: str, method: str) -> int:
    """Processes of the fine-tuning job of ``model`` x ``method`` (config already checked)."""
    from seqpeft.distributed import world_size

    settings = training_for(config, method)
    return world_size(int(settings.get("processes", 1)), int(size_resources(config, model)["gpu"]),
                      str(settings.get("device", "auto")))


def _key_path(parts) -> str:
    path = ""
    for part in parts:
        path += f"[{part}]" if isinstance(part, int) else (f".{part}" if path else str(part))
    return path


def config_error_message(error: BaseException) -> str | None:
    """One line naming the key path for a config problem, or None if ``error`` is not one.

    Handles ``SeqpeftInputError`` from ``check_config`` and the jsonschema ``ValidationError``
    that ``snakemake.utils.validate`` wraps in a ``WorkflowError`` (whose own message would
    print the whole schema and config; it is found as the wrapper's ``__context__``).
    """
    if isinstance(error, SeqpeftInputError):
        return str(error)
    invalid, seen = error, set()
    while invalid is not None and not (hasattr(invalid, "absolute_path") and hasattr(invalid, "validator")):
        seen.add(id(invalid))
        invalid = invalid.__cause__ or invalid.__context__
        if invalid is not None and id(invalid) in seen:
            invalid = None
    if invalid is None:
        return None
    path = list(invalid.absolute_path)
    if invalid.validator == "additionalProperties" and isinstance(invalid.instance, dict):
        allowed = sorted((invalid.schema.get("properties") or {}))
        extra = [key for key in invalid.instance if key not in allowed]
        if extra:
            close = difflib.get_close_matches(str(extra[0]), allowed, n=1)
            fix = f" Fix: did you mean {close[0]!r}?" if close else ""
            return (f"{_key_path([*path, extra[0]])}: unknown key; allowed here: {', '.join(allowed)}.{fix}")
    described = invalid.schema.get("description") if isinstance(invalid.schema, dict) else None
    hint = f" ({described.strip()})" if described else ""
    return f"{_key_path(path) or '<top level>'}: {invalid.message}{hint}"


def expand_runs(config: dict) -> list[Run]:
    """Every (task, model, method, partition) of the experiment blocks, deduplicated, in block order."""
    tasks = _section(config, "tasks")
    runs: dict[Run, None] = {}
    for block in config.get("experiments") or []:
        for task in block["tasks"]:
            for model in block["models"]:
                for method in block["methods"]:
                    for partition in tasks[task]["partitions"]:
                        runs.setdefault(Run(task, model, method, str(partition)), None)
    return list(runs)


def max_length_overrides(config: dict) -> dict[tuple[str, str, str], int]:
    """(task, model, method) -> the ``max_length`` its experiment block sets, for the runs whose block
    sets one. A run listed by several blocks must get one length from all of them (a block without
    the key gives the model's own), since its results path does not name the length."""
    if not any("max_length" in (block or {}) for block in config.get("experiments") or []):
        return {}  # the common case, cheap: the workflow asks once per job
    models = _section(config, "models")
    lengths: dict[tuple[str, str, str], tuple[int, int]] = {}
    for i, block in enumerate(config.get("experiments") or []):
        override = (block or {}).get("max_length")
        for task in block.get("tasks") or []:
            for model in block.get("models") or []:
                own = int((models.get(model) or {}).get("max_length") or DEFAULT_MAX_LENGTH)
                length = int(override) if override is not None else own
                for method in block.get("methods") or []:
                    key = (task, model, method)
                    if key in lengths and lengths[key][0] != length:
                        _fail(f"experiments[{i}].max_length", f"{task}/{model}/{method} is also in experiments[{lengths[key][1]}] "
                              f"with max_length {lengths[key][0]}, here {length}: one run cannot have two input lengths.",
                              fix="give both blocks the same max_length, or list the run in one of them.")
                    lengths.setdefault(key, (length, i))
                    if override is not None and length != own:
                        lengths[key] = (length, i)
    return {key: length for key, (length, _) in lengths.items()
            if length != int((models.get(key[1]) or {}).get("max_length") or DEFAULT_MAX_LENGTH)}


def run_max_length(config: dict, task: str, model: str, method: str) -> int:
    """The input length of a run: its experiment block's ``max_length``, else the model's."""
    override = max_length_overrides(config).get((task, model, method))
    if override is not None:
        return override
    return int((_section(config, "models")[model] or {}).get("max_length") or DEFAULT_MAX_LENGTH)


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


def results_dir(config: dict) -> str:
    return str(config.get("results") or "results")


def tokenizer_of(config: dict, model: str) -> str:
    """The tokenizer key a model uses: its ``tokenizer:`` entry, else the model's own name."""
    spec = _section(config, "models")[model] or {}
    return str(spec.get("tokenizer") or model)


def model_dir(config: dict, model: str) -> str:
    """Where the model is loaded from: the ``path:`` of local models, else ``{results}/models/{model}``."""
    spec = _section(config, "models")[model] or {}
    if spec.get("path") is not None:
        return str(spec["path"])
    return f"{results_dir(config)}/models/{model}"


def source_dir(config: dict, source: str) -> str:
    """The source's directory: its ``local`` copy if set, else ``{results}/sources/{source}``."""
    spec = _section(config, "sources")[source] or {}
    if spec.get("local") is not None:
        return str(spec["local"])
    return f"{results_dir(config)}/sources/{source}"


def task_data_path(config: dict, task: str) -> str:
    """The task's data inside its source: a folder of train/dev/test.csv or a FASTA file.

    A ``local`` copy of an ``archive: none`` source may be the file itself rather than a folder
    holding it; then that file is the data.
    """
    spec = _section(config, "tasks")[task]
    source = _section(config, "sources")[spec["source"]] or {}
    base = source_dir(config, spec["source"])
    if source.get("local") is not None and source.get("archive") == "none" and Path(base).is_file():
        return base
    return str(Path(base) / spec["path"])


def tokenizer_dir(config: dict, tokenizer: str) -> str:
    """Directory of a tokenizer key: a built tokenizer, or the directory of the model of that name."""
    if tokenizer in _section(config, "tokenizers"):
        return f"{results_dir(config)}/tokenizers/{tokenizer}"
    return model_dir(config, tokenizer)


def model_size(config: dict, model: str) -> str:
    """The model's ``size``; config-built models default to tiny, others to small."""
    spec = _section(config, "models")[model] or {}
    return str(spec.get("size") or ("tiny" if spec.get("build") is not None else "small"))


def size_resources(config: dict, model: str) -> dict[str, Any]:
    """gpu / mem_mb / runtime (and optional gpu_model) for jobs of ``model``."""
    size = model_size(config, model)
    overrides = ((config.get("resources") or {}).get("sizes") or {}).get(size) or {}
    return {**DEFAULT_SIZE_RESOURCES[size], **overrides}


def finetune_threads(config: dict) -> int:
    return int((config.get("resources") or {}).get("finetune_threads") or DEFAULT_FINETUNE_THREADS)


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
    spec = dict(_section(config, "methods")[method] or {})
    spec.pop("training", None)
    spec.pop("dsp", None)
    if spec.get("peft") is None:
        spec["method"] = str(spec.get("method", method))
    return canonical(spec)


def dsp_encoding(config: dict, method: str) -> str | None:
    """The DSP encoding a method variant trains with (its ``dsp.encoding``), or None without DSP."""
    spec = _section(config, "methods").get(method) or {}
    dsp = spec.get("dsp")
    return None if dsp is None else str((dsp or {}).get("encoding"))


def dsp_settings(config: dict, task: str, model: str, encoding: str, max_length: int | None = None) -> dict:
    """Everything that decides a task's DSP encoding for one model (``seqpeft.dsp.DspSettings``):
    the task's template and domain (default: the task name), the model's max_length and
    on_too_long, and for the nucleotide encoding the model's ``dsp_nucleotide_ids`` overrides."""
    task_entry = _section(config, "tasks")[task] or {}
    model_entry = _section(config, "models")[model] or {}
    ids = (model_entry.get("dsp_nucleotide_ids") or {}) if encoding == "nucleotide" else {}
    return canonical({
        "encoding": encoding,
        "template": str(task_entry.get("dsp_template") or DEFAULT_TEMPLATE),
        "domain": str(task_entry.get("domain") or task),
        "max_length": int(max_length or model_entry.get("max_length") or DEFAULT_MAX_LENGTH),
        "on_too_long": str(model_entry.get("on_too_long") or "truncate"),
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


def task_params(config: dict, task: str) -> dict:
    """The task's spec minus its DSP keys (``domain``, ``dsp_template``), which only DSP jobs read."""
    spec = {k: v for k, v in (_section(config, "tasks")[task] or {}).items() if k not in TASK_DSP_KEYS}
    return canonical(spec)


def training_for(config: dict, method: str) -> dict:
    """The global ``training`` settings updated with the method's ``training:`` overrides."""
    spec = _section(config, "methods")[method] or {}
    return canonical({**(config.get("training") or {}), **(spec.get("training") or {})})


def model_params(config: dict, model: str) -> dict:
    """The model's spec minus ``size`` (a scheduling hint that must not force retraining) and its
    DSP nucleotide ids (they reach DSP jobs through ``dsp_settings``)."""
    spec = dict(_section(config, "models")[model] or {})
    spec.pop("size", None)
    for key in MODEL_DSP_KEYS:
        spec.pop(key, None)
    return canonical(spec)


def download_sources(config: dict) -> list[str]:
    """Sources fetched by the download rule: a ``url`` and no ``local`` copy."""
    return [name for name, spec in _section(config, "sources").items()
            if (spec or {}).get("url") is not None and (spec or {}).get("local") is None]


def synthetic_sources(config: dict) -> list[str]:
    return [name for name, spec in _section(config, "sources").items() if (spec or {}).get("synthetic") is not None]


def prepared_models(config: dict) -> list[str]:
    """Models that the prepare rule materialises (``hub`` and ``build``; ``path:`` models are used in place)."""
    return [name for name, spec in _section(config, "models").items() if (spec or {}).get("path") is None]


# ---- hyper-parameter search (seqpeft.tune) ----


def hpo_settings(config: dict) -> HpoSettings:
    return HpoSettings.from_dict(config.get("hpo"))


def hpo_params(config: dict) -> dict:
    """The ``hpo`` section with defaults filled in, as a tuning job's params."""
    return canonical(hpo_settings(config).as_dict())


def uses_hpo(config: dict, method: str) -> bool:
    """Whether runs of ``method`` take their learning rate and batch size from a tuning study."""
    return bool(training_for(config, method).get("hpo"))


def tuning_training(config: dict, method: str) -> dict:
    """A run's training settings as its tuning study sees them: without the values it chooses."""
    return {key: value for key, value in training_for(config, method).items() if key not in (*TUNED_KEYS, "hpo")}


def tuning_partition(config: dict, task: str, partition: str) -> str:
    """The partition whose dev split tunes the run of ``partition``.

    A cross-validation fold tunes on its own validation partition: any other fold's would be this
    fold's test data. Replicate seeds share one dev split, so the task's first partition tunes them all.
    """
    spec = _section(config, "tasks")[task]
    if spec.get("kind") == "signal_peptide":
        return str(partition)
    return str(spec["partitions"][0])


def tuning_dir(config: dict, task: str, model: str, method: str, partition: str) -> str:
    """Where the study of a run lives: journal, trial-job markers, ``best_params.json``."""
    return f"{results_dir(config)}/tuning/{task}/{model}/{method}/{tuning_partition(config, task, partition)}"


def tune_trials_runtime(config: dict, model: str, method: str) -> int:
    """Minutes for the first attempt of a trial job: a fine-tuning job's, times the full-length
    runs its share of trials adds up to (trials may stop early; the estimate assumes they do not)."""
    hpo = hpo_settings(config)
    epochs = int(training_for(config, method).get("epochs") or 10)
    trial_epochs = min(hpo.epochs or epochs, epochs)
    runs = math.ceil(hpo.share(0) * trial_epochs / epochs)
    return int(size_resources(config, model)["runtime"]) * max(1, runs)
