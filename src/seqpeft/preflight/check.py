"""Cross-reference checks of the workflow config, and the cluster resources of its jobs.

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
import re
from pathlib import Path
from typing import Any

from seqpeft.methods.dsp import DEFAULT_TEMPLATE, ENCODINGS, template_problem
from seqpeft.util.errors import SeqpeftInputError
from seqpeft.methods.options import option_problem, pairing_problem
from seqpeft.methods.registry import METHOD_NAMES, passthrough_method, resolve_method
from seqpeft.models.families import FAMILIES
from seqpeft.config.jobs import dsp_encoding, max_length_overrides, method_spec, training_for, training_key
from seqpeft.config.paths import section
from seqpeft.config.schema import default, with_defaults
from seqpeft.config.settings import setup_problem, world_size
from seqpeft.core.registry import task_kinds
from seqpeft.config.tune_settings import check_hpo

MODEL_SOURCES = ("hub", "path", "build")
SIZES = ("tiny", "small", "medium", "large", "xlarge")
REVISION_RE = re.compile(r"^[0-9a-f]{40}$")
NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")



def _fail(path: str, problem: str, fix: str = "") -> None:
    raise SeqpeftInputError(path, problem, fix=fix)


def _unknown(path: str, what: str, name: Any, known: dict | list | tuple) -> None:
    known = sorted(known)
    close = difflib.get_close_matches(str(name), known, n=1)
    fix = f"did you mean {close[0]!r}?" if close else f"define {what} {name!r} or use a known one."
    _fail(path, f"unknown {what} {name!r}; known: {', '.join(known) or '(none)'}.", fix)


def check_config(config: dict) -> None:
    """Raise ``SeqpeftInputError`` naming the key path of the first inconsistency in ``config``."""
    sources = section(config, "sources")
    tasks = section(config, "tasks")
    tokenizers = section(config, "tokenizers")
    models = section(config, "models")
    methods = section(config, "methods")
    _check_names({"sources": sources, "tasks": tasks, "tokenizers": tokenizers, "models": models, "methods": methods})
    _check_sources(sources)
    _check_tasks(tasks, sources)
    _check_models(models, tokenizers)
    _check_methods(methods)
    experiments = config.get("experiments") or []
    _check_experiments(experiments, tasks, models, methods)
    _check_local_paths(sources, models)
    _check_results(config)
    max_length_overrides(config)  # one input length per run
    _check_applicability(config, models, methods, experiments)
    _check_method_options(config, models, methods, experiments)
    _check_alphabets(tasks, models, tokenizers, experiments)
    check_hpo(config)
    _check_processes(config, tasks, models, methods, experiments)

    axes = ((config.get("figures") or {}).get("pareto_axes")) or []
    for i, axis in enumerate(axes):
        if axis not in ("params", "memory", "time"):
            _fail(f"figures.pareto_axes[{i}]", f"unknown axis {axis!r}; known: params, memory, time.")


# Families whose models lack past-key-values support, so peft prefix tuning cannot apply.
NO_PREFIX_FAMILIES = ("esm",)
MAX_GPUS_PER_JOB = 8


def _check_names(sections: dict[str, dict]) -> None:
    for key, entries in sections.items():
        for name in entries:
            if not NAME_RE.match(str(name)):
                _fail(f"{key}.{name}", "names are used in file paths and may contain only letters, digits, "
                      "'_', '-' and '.', starting with a letter or digit.")


def _check_sources(sources: dict) -> None:
    for name, spec in sources.items():
        path = f"sources.{name}"
        spec = spec or {}
        kinds = [k for k in ("url", "local", "synthetic", "derive") if spec.get(k) is not None]
        for made in ("synthetic", "derive"):
            if made in kinds and len(kinds) > 1:
                _fail(path, f"a {'synthetic' if made == 'synthetic' else 'derived'} source cannot also have "
                      f"{' or '.join(repr(k) for k in kinds if k != made)}.")
        if not kinds:
            _fail(path, "needs 'url' (downloaded), 'local' (pre-staged copy), 'synthetic' (generated) or 'derive' "
                  "(written from another source).")
        if "derive" in kinds:
            origin = spec.get("from")
            if origin not in sources or (sources[origin] or {}).get("derive") is not None:
                _unknown(f"{path}.from", "source (downloaded, local or synthetic)", origin,
                         [n for n, s in sources.items() if not (s or {}).get("derive")])
        # a url without sha256/git_blob is unpinned: listed by the workflow, refused by its job
        # unless allow_unpinned (seqpeft.config.pins)
        if spec.get("url") is not None and spec.get("local") is None and spec.get("archive") == "none" \
                and not spec.get("filename"):
            _fail(f"{path}.filename", "a source with 'archive: none' needs the file name to save the download as.")


def _check_tasks(tasks: dict, sources: dict) -> None:
    for name, spec in tasks.items():
        path = f"tasks.{name}"
        spec = spec or {}
        if spec.get("source") not in sources:
            _unknown(f"{path}.source", "source", spec.get("source"), sources)
        if spec["kind"] not in task_kinds():
            _fail(f"{path}.kind", f"unknown task kind {spec['kind']!r}; known: {', '.join(task_kinds())}.")
        kind = task_kinds()[spec["kind"]]
        for other in task_kinds():  # a kind's own settings block (e.g. signal_peptide:) applies to that kind only
            if spec.get(other) and other != kind.name:
                _fail(f"{path}.{other}", f"applies to {other} tasks only, not {kind.name!r}.", "delete it from this task.")
        partitions = spec.get("partitions") or []
        if not partitions:
            _fail(f"{path}.partitions", "needs at least one partition.")
        if len(set(map(str, partitions))) != len(partitions):
            _fail(f"{path}.partitions", f"lists a partition twice: {partitions}.")
        for i, part in enumerate(partitions):
            if problem := kind.partitions.problem(part):
                _fail(f"{path}.partitions[{i}]", f"{problem} {kind.name} partitions are {kind.partitions.meaning}.")
        if spec.get("dsp_template") is not None:
            problem = template_problem(str(spec["dsp_template"]))
            if problem:
                _fail(f"{path}.dsp_template", f"{spec['dsp_template']!r} {problem}",
                      f"e.g. {DEFAULT_TEMPLATE!r} (the default).")


def _check_models(models: dict, tokenizers: dict) -> None:
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
            # no revision: unpinned, listed by the workflow and resolved by `seqpeft pin` (seqpeft.config.pins)
            revision = spec.get("revision")
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


def _check_methods(methods: dict) -> None:
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


def _check_experiments(experiments: list, tasks: dict, models: dict, methods: dict) -> None:
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

def _check_local_paths(sources: dict, models: dict) -> None:
    """Pre-staged data and local models must exist before thousands of jobs are planned on them."""
    for name, spec in sources.items():
        local = (spec or {}).get("local")
        if local is not None and not Path(local).exists():
            _fail(f"sources.{name}.local", f"the pre-staged path {local!r} does not exist.",
                  "stage the data there, or remove 'local' to download it.")
        if local is not None and Path(local).is_file() and (spec or {}).get("archive") != "none":
            _fail(f"sources.{name}.local", f"{local!r} is a file{_archive_note(Path(local))}, but the tasks read "
                  "folders inside a pre-staged copy (e.g. <local>/<task path>/train.csv).",
                  f"unpack it and point 'local' at the unpacked folder (tar -xf / unzip), or set archive: none if "
                  "the file itself is the data.")
    for name, spec in models.items():
        local = (spec or {}).get("path")
        if local is not None and not (Path(local) / "config.json").is_file():
            _fail(f"models.{name}.path", f"{local!r} is not a model directory (missing, or no config.json in it).",
                  "point it at a directory written by save_pretrained.")


def _check_results(config: dict) -> None:
    """The results folder, or the first of its parents that exists, must be a folder."""
    results = Path(str(config.get("results") or default("results")))
    for path in (results, *results.parents):
        if path.exists():
            if not path.is_dir():
                _fail("results", f"{str(results)!r} cannot be a folder: {str(path)!r} is a file.",
                      "point results at a folder (it is created if missing), or move the file away.")
            return


def _archive_note(path: Path) -> str:
    """' (a zip archive)' / ' (a tar archive)' when the content says so (names lie), else ''."""
    import tarfile
    import zipfile

    try:
        kind = "zip" if zipfile.is_zipfile(path) else "tar" if tarfile.is_tarfile(path) else None
    except OSError:
        kind = None
    return f" (a {kind} archive)" if kind else ""


def _check_applicability(config: dict, models: dict, methods: dict, experiments: list) -> None:
    """Method x model pairs that cannot work, and resource requests no job can satisfy."""
    device = with_defaults(config.get("training"), "training")["device"]
    tasks = section(config, "tasks")
    for i, block in enumerate(experiments):
        for method in (block or {}).get("methods") or []:
            if dsp_encoding(config, method) is None:
                continue
            for task in (block or {}).get("tasks") or []:
                kind = tasks[task]["kind"]
                if not task_kinds()[kind].text_template:
                    text_kinds = ", ".join(name for name, entry in task_kinds().items() if entry.text_template)
                    _fail(f"experiments[{i}].methods", f"{method!r} uses domain-shift prompting, which applies to "
                          f"{text_kinds} tasks only; task {task!r} is {kind}.",
                          f"drop {method!r} from this block or move it to a block without {task!r}.")
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


def _check_method_options(config: dict, models: dict, methods: dict, experiments: list) -> None:
    """Each method variant's options against what its method accepts (its peft config class's
    fields, seqpeft's own arguments; ``seqpeft.methods.options``), and on each model it is
    paired with (``pairing_problem``): a misspelt option fails here, not three times in a job."""
    resolved = {}
    for name in methods:
        method, args = resolve_method(name, method_spec(config, name))
        resolved[name] = (method, args)
        if problem := option_problem(method, args):
            option, text, fix = problem
            where = f"methods.{name}.{option}" if option else f"methods.{name}.peft"
            _fail(where, f"{text} (method variant {name!r})" if option else text, fix)
    for i, block in enumerate(experiments):
        for model in (block or {}).get("models") or []:
            spec = models.get(model) or {}
            family = FAMILIES.get(str((spec.get("build") or {}).get("family") or spec.get("family")))
            if family is None:  # known only once the model is downloaded: its job checks it
                continue
            for name in (block or {}).get("methods") or []:
                if problem := pairing_problem(*resolved[name], family):
                    option, text, fix = problem
                    _fail(f"methods.{name}.{option}", f"{text} (method variant {name!r} with model {model!r}, "
                          f"experiments[{i}])", fix)
# What a model reads when its entry does not say (models.<name>.alphabet): by the tokenizer a
# config-built model uses, else by family. An esm-family hub model may read either (ESM-2 reads
# proteins, the Nucleotide Transformer DNA): without alphabet: it is not checked.
TOKENIZER_ALPHABETS = {"nucleotide": "dna", "kmer": "dna", "esm": "protein", "bytes": "any"}
FAMILY_ALPHABETS = {"dnabert2": "dna", "mistral": "dna", "mixtral": "dna"}


def model_alphabet(spec: dict, tokenizers: dict) -> str | None:
    """dna, protein or any (text models); None when the config cannot tell."""
    spec = spec or {}
    if spec.get("alphabet"):
        return str(spec["alphabet"])
    tokenizer = (tokenizers.get(spec["tokenizer"]) or {}) if spec.get("tokenizer") else {}
    if tokenizer.get("kind") in TOKENIZER_ALPHABETS:
        return TOKENIZER_ALPHABETS[tokenizer["kind"]]
    family = (spec.get("build") or {}).get("family") or spec.get("family")
    return FAMILY_ALPHABETS.get(family)


def _check_alphabets(tasks: dict, models: dict, tokenizers: dict, experiments: list) -> None:
    """A protein task on a model that reads only DNA, or the reverse, learns nothing: refuse it
    before any job runs (an explicit task alphabet must lie within the model's letters)."""
    from seqpeft.data.readers import ALPHABETS, alphabet_name

    for i, block in enumerate(experiments):
        for task in (block or {}).get("tasks") or []:
            spec = tasks[task] or {}
            try:
                letters = task_kinds()[spec["kind"]].alphabet_of(spec)
            except SeqpeftInputError as error:
                _fail(f"tasks.{task}.alphabet", error.problem, error.fix)
            for model in (block or {}).get("models") or []:
                reads = model_alphabet(models.get(model), tokenizers)
                if reads in (None, "any"):
                    continue
                named = alphabet_name(letters)
                fits = named == reads if named else not set(letters) - set(ALPHABETS[reads])
                if not fits:
                    _fail(f"experiments[{i}]", f"task {task!r} holds {named or 'letters ' + letters} sequences but "
                          f"model {model!r} reads {reads} only.",
                          f"pair {task!r} with a {named or 'suitable'} model in a block of its own, or, if the task's "
                          f"alphabet is wrong, set tasks.{task}.family (dna | protein) or tasks.{task}.alphabet; "
                          f"models.{model}.alphabet says what the model reads.")


def _check_processes(config: dict, tasks: dict, models: dict, methods: dict, experiments: list) -> None:
    """Multi-process jobs: CPU processes or GPUs (not both), enough batch for every rank, FSDP only
    where parameters may be sharded."""
    for block in experiments:
        for model in (block or {}).get("models") or []:
            gpus = int(size_resources(config, model)["gpu"])
            for method in (block or {}).get("methods") or []:
                settings = with_defaults(training_for(config, method), "training")
                try:
                    world = world_size(int(settings["processes"]), gpus, str(settings["device"]))
                except SeqpeftInputError as error:
                    _fail(training_key(config, method, "processes"), f"{error.problem} (model {model!r})", error.fix)
                if world <= 1:
                    continue
                spec = method_spec(config, method)
                entry = passthrough_method(spec["peft"]) if "peft" in spec else resolve_method(method, spec)[0]
                for task in (block or {}).get("tasks") or []:
                    kind = str(tasks[task]["kind"])
                    problem = setup_problem(world, int(settings["batch_size"]), str(settings["distributed"]), entry, kind)
                    if problem:
                        _fail(training_key(config, method, problem[0]),
                              f"{problem[1]} (model {model!r}, method {method!r}, task {task!r})", problem[2])


def world_size_of(config: dict, model: str, method: str) -> int:
    """Processes of the fine-tuning job of ``model`` x ``method`` (config already checked)."""
    settings = with_defaults(training_for(config, method), "training")
    return world_size(int(settings["processes"]), int(size_resources(config, model)["gpu"]), str(settings["device"]))


def model_size(config: dict, model: str) -> str:
    """The model's ``size``; config-built models default to tiny, others to small."""
    spec = section(config, "models")[model] or {}
    return str(spec.get("size") or ("tiny" if spec.get("build") is not None else "small"))


def size_resources(config: dict, model: str) -> dict[str, Any]:
    """gpu / mem_mb / runtime (and optional gpu_model) for jobs of ``model``."""
    size = model_size(config, model)
    overrides = ((config.get("resources") or {}).get("sizes") or {}).get(size) or {}
    return {**default("resources", "sizes", size), **overrides}  # the sizes' table: the schema's library_default


def finetune_threads(config: dict) -> int:
    return int(with_defaults(config.get("resources"), "resources")["finetune_threads"])
