"""Hyper-parameter search settings: the config's ``hpo:`` section, its named search spaces, and the
study a run tunes in (``seqpeft.training.tune`` runs the study; its docstring says how a study stays a
function of its config and seed).

Search spaces are named in ``hpo.spaces``; a run tunes in its method family's space (see
``METHOD_SPACES``: full fine-tuning, low-rank, adapters, prompts, head only) unless its
``training.hpo`` names a space. The spaces' defaults (and every other default of ``hpo``) live in
the workflow's JSON schema, which ``HpoSettings.from_dict`` reads (``seqpeft.config.schema``) when it is
given a partial section.

Light on purpose (the workflow's config check imports it): no optuna or torch at import time.
"""

from __future__ import annotations

import hashlib
import json
import math
from dataclasses import asdict, dataclass, fields, replace
from typing import Any, Callable

from seqpeft.config import schema
from seqpeft.util.errors import SeqpeftInputError
from seqpeft.config.jobs import canonical, method_spec, training_for, training_key
from seqpeft.config.recipe import selection_score
from seqpeft.config.settings import TUNED_KEYS

DIRECTION = "maximize"
METRIC = ("dev selection metric (MCC; detection + cleavage-site MCC for signal peptides; Spearman for regression; "
          "minus dev loss under select_on: loss)")

# The default search space of each registry method: which family of learning rates suits it.
# A peft pass-through (``peft: LoHaConfig`` ...) tunes in the low-rank space.
METHOD_SPACES = {
    "full": "full",
    "frozen": "head",
    "lora": "low_rank", "adalora": "low_rank", "adalora_rs": "low_rank", "qlora": "low_rank",
    "ia3": "adapter", "adapter": "adapter",
    "prompt_tuning": "prompt", "prefix_tuning": "prompt", "p_tuning": "prompt", "lopa": "prompt",
    "deep_prompt": "prompt",
}
PASSTHROUGH_SPACE = "low_rank"


def _pruner_median(settings: "PrunerSettings"):
    import optuna

    # Reported steps are evaluation numbers from 1: pruning may start after the warm-up evaluations.
    return optuna.pruners.MedianPruner(n_startup_trials=settings.startup_trials,
                                       n_warmup_steps=settings.warmup_evaluations + 1)


def _pruner_successive_halving(settings: "PrunerSettings"):
    import optuna

    return optuna.pruners.SuccessiveHalvingPruner(min_resource=settings.min_evaluations,
                                                  reduction_factor=settings.reduction_factor)


def _pruner_none(settings: "PrunerSettings"):
    import optuna

    return optuna.pruners.NopPruner()


PRUNERS: dict[str, Callable[["PrunerSettings"], Any]] = {
    "median": _pruner_median,
    "successive_halving": _pruner_successive_halving,
    "none": _pruner_none,
}


@dataclass(frozen=True)
class PrunerSettings:
    """How trials that fall behind earlier rounds are stopped early (evaluations are the steps)."""

    kind: str
    startup_trials: int  # median: complete trials of earlier rounds before any trial may be pruned
    warmup_evaluations: int  # median: evaluations every trial gets before it may be pruned
    min_evaluations: int  # successive_halving: evaluations of the first rung
    reduction_factor: int  # successive_halving: 1 / fraction of trials promoted per rung


@dataclass(frozen=True)
class StudySettings:
    """Everything one study samples and trains with: a search space with the budget it runs under."""

    space: str
    learning_rate: tuple[float, float]  # log-uniform
    batch_sizes: tuple[int, ...]
    trials: int | None  # None in a trial job: one trial does not depend on how many follow it
    trial_jobs: int  # trials per round
    epochs: int | None  # a trial's epochs (None: the run's own)
    seed: int
    startup_trials: int  # trials proposed at random before TPE models the results
    pruner: PrunerSettings

    def round_of(self, trial: int) -> int:
        return trial // self.trial_jobs

    def earlier_trials(self, trial: int) -> range:
        """The trials whose results trial ``trial``'s parameters and pruning depend on."""
        return range(self.round_of(trial) * self.trial_jobs)

    def params(self) -> dict:
        """A trial job's params: all but ``trials`` (raising it adds trials and reruns none)."""
        values = asdict(self)
        values.pop("trials")
        values["learning_rate"] = list(self.learning_rate)
        values["batch_sizes"] = list(self.batch_sizes)
        return values

    @classmethod
    def from_params(cls, values: dict) -> "StudySettings":
        values = dict(values)
        values["learning_rate"] = tuple(values["learning_rate"])
        values["batch_sizes"] = tuple(values["batch_sizes"])
        values["pruner"] = PrunerSettings(**dict(values["pruner"]))
        return cls(**{**values, "trials": values.get("trials")})

    def distributions(self) -> dict:
        from optuna.distributions import CategoricalDistribution, FloatDistribution

        low, high = self.learning_rate
        return {"learning_rate": FloatDistribution(low, high, log=True),
                "batch_size": CategoricalDistribution(list(self.batch_sizes))}


SPACE_BUDGET_KEYS = ("trials", "epochs", "pruner")  # what a named space may set besides its ranges


@dataclass(frozen=True)
class HpoSettings:
    """The config's ``hpo:`` section (defaults from the schema): budget, pruning, named spaces."""

    trials: int
    trial_jobs: int
    epochs: int | None
    seed: int
    startup_trials: int
    pruner: PrunerSettings
    spaces: dict  # name -> {learning_rate, batch_sizes[, trials, epochs, pruner, description]}, checked

    @classmethod
    def from_dict(cls, values: dict | None, where: str = "hpo") -> "HpoSettings":
        """Check and fill in the schema's defaults; every problem names its config key."""
        given = dict(values or {})
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(given) - known)
        if unknown:
            fix = (f"search ranges live in named spaces now: hpo.spaces.<name>.{unknown[0]} (see the README)."
                   if unknown[0] in ("learning_rate", "batch_sizes") else f"use only {sorted(known)}.")
            raise SeqpeftInputError(f"{where}.{unknown[0]}", "unknown key.", fix=fix)
        defaults = schema.defaults("hpo")
        merged = {**defaults, **given}
        merged["pruner"] = {**defaults["pruner"], **dict(given.get("pruner") or {})}
        merged["spaces"] = {**defaults["spaces"], **dict(given.get("spaces") or {})}
        for key in ("trials", "trial_jobs", "seed"):
            _integer(merged[key], f"{where}.{key}", minimum=0 if key == "seed" else 1)
        if merged["epochs"] is not None:
            _integer(merged["epochs"], f"{where}.epochs", minimum=1)
        _integer(merged["startup_trials"], f"{where}.startup_trials", minimum=0)
        merged["pruner"] = _pruner_settings(merged["pruner"], f"{where}.pruner")
        merged["spaces"] = {str(name): _space(spec, f"{where}.spaces.{name}") for name, spec in merged["spaces"].items()}
        return cls(**merged)

    def study(self, space: str, where: str = "hpo.spaces") -> StudySettings:
        """The study settings of a named space: its ranges, and its budget where it sets one."""
        if space not in self.spaces:
            raise SeqpeftInputError(where, f"unknown search space {space!r}; known: {', '.join(sorted(self.spaces))}.",
                                    fix="name one of them, or define it under hpo.spaces.")
        spec = self.spaces[space]
        trials = int(spec.get("trials", self.trials))
        pruner = replace(self.pruner, **dict(spec.get("pruner") or {}))
        return StudySettings(space=space, learning_rate=tuple(spec["learning_rate"]),
                             batch_sizes=tuple(spec["batch_sizes"]), trials=trials, trial_jobs=self.trial_jobs,
                             epochs=spec.get("epochs", self.epochs), seed=self.seed, startup_trials=self.startup_trials,
                             pruner=pruner)


def _integer(value: Any, key: str, minimum: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise SeqpeftInputError(key, f"must be an integer >= {minimum}, got {value!r}.")


def _log_range(value: Any, key: str) -> tuple[float, float]:
    if not isinstance(value, (list, tuple)) or len(value) != 2:
        raise SeqpeftInputError(key, f"must be a range [low, high] of two numbers, got {value!r}.",
                                fix="e.g. learning_rate: [1.0e-5, 1.0e-2].")
    low, high = value
    for bound in (low, high):
        if isinstance(bound, bool) or not isinstance(bound, (int, float)) or not math.isfinite(bound) or bound <= 0:
            raise SeqpeftInputError(key, f"bounds of a log-uniform range must be positive numbers, got {value!r}.",
                                    fix="e.g. learning_rate: [1.0e-5, 1.0e-2].")
    if low >= high:
        raise SeqpeftInputError(key, f"low ({low}) must be below high ({high}).",
                                fix="write [low, high] with low < high; to fix the learning rate, set "
                                    "training.learning_rate and hpo off instead.")
    return float(low), float(high)


def _batch_sizes(value: Any, key: str) -> tuple[int, ...]:
    if not isinstance(value, (list, tuple)) or not value:
        raise SeqpeftInputError(key, f"must be a non-empty list of batch sizes, got {value!r}.", fix="e.g. [16, 32, 64].")
    for size in value:
        if isinstance(size, bool) or not isinstance(size, int) or size < 1:
            raise SeqpeftInputError(key, f"batch sizes must be positive integers, got {size!r}.", fix="e.g. [16, 32, 64].")
    if len(set(value)) != len(value):
        raise SeqpeftInputError(key, f"lists a batch size twice: {list(value)}.")
    return tuple(value)


def _space(spec: Any, key: str) -> dict:
    if not isinstance(spec, dict):
        raise SeqpeftInputError(key, f"must be a mapping with learning_rate and batch_sizes, got {spec!r}.")
    allowed = {"learning_rate", "batch_sizes", "description", *SPACE_BUDGET_KEYS}
    unknown = sorted(set(spec) - allowed)
    if unknown:
        raise SeqpeftInputError(f"{key}.{unknown[0]}", "unknown key.", fix=f"use only {sorted(allowed)}.")
    for required in ("learning_rate", "batch_sizes"):
        if required not in spec:
            raise SeqpeftInputError(f"{key}.{required}", "is missing: a search space needs learning_rate and batch_sizes.")
    checked = {"learning_rate": _log_range(spec["learning_rate"], f"{key}.learning_rate"),
               "batch_sizes": _batch_sizes(spec["batch_sizes"], f"{key}.batch_sizes")}
    if "trials" in spec:
        _integer(spec["trials"], f"{key}.trials", minimum=1)
        checked["trials"] = spec["trials"]
    if "epochs" in spec:
        if spec["epochs"] is not None:
            _integer(spec["epochs"], f"{key}.epochs", minimum=1)
        checked["epochs"] = spec["epochs"]
    if "pruner" in spec:
        checked["pruner"] = _pruner_overrides(spec["pruner"], f"{key}.pruner")
    if "description" in spec:
        checked["description"] = str(spec["description"])
    return checked


def _pruner_overrides(value: Any, key: str) -> dict:
    value = dict(value or {})
    known = {f.name for f in fields(PrunerSettings)}
    unknown = sorted(set(value) - known)
    if unknown:
        raise SeqpeftInputError(f"{key}.{unknown[0]}", "unknown key.", fix=f"use only {sorted(known)}.")
    if "kind" in value and value["kind"] not in PRUNERS:
        raise SeqpeftInputError(f"{key}.kind", f"unknown pruner {value['kind']!r}; known: {', '.join(PRUNERS)}.")
    for name, minimum in (("startup_trials", 0), ("warmup_evaluations", 0), ("min_evaluations", 1),
                          ("reduction_factor", 2)):
        if name in value:
            _integer(value[name], f"{key}.{name}", minimum)
    return value


def _pruner_settings(value: Any, key: str) -> PrunerSettings:
    value = _pruner_overrides(value, key)
    missing = sorted({f.name for f in fields(PrunerSettings)} - set(value))
    if missing:
        raise SeqpeftInputError(f"{key}.{missing[0]}", "is missing.")
    return PrunerSettings(**value)


# ---- which study a run tunes in (the workflow's side) ----


def space_of(config: dict, method: str) -> str:
    """The search space of ``method``: its ``training.hpo`` if that names one, else its family's."""
    hpo = training_for(config, method).get("hpo")
    if isinstance(hpo, str):
        return hpo
    spec = (config.get("methods") or {}).get(method) or {}
    if spec.get("peft") is not None:
        return PASSTHROUGH_SPACE
    registry = method_spec(config, method)["method"]
    if registry not in METHOD_SPACES:
        raise SeqpeftInputError(f"methods.{method}", f"method {registry!r} has no default search space.",
                                fix=f"name one: training: {{hpo: <space>}} with a space of hpo.spaces.")
    return METHOD_SPACES[registry]


def study_settings(config: dict, method: str) -> StudySettings:
    """The study that tunes the runs of ``method``."""
    return HpoSettings.from_dict(config.get("hpo")).study(space_of(config, method),
                                                          where=training_key(config, method, "hpo"))


def check_hpo(config: dict) -> None:
    """The ``hpo`` section, and the search space of every method that tunes (``check_config``)."""
    hpo = HpoSettings.from_dict(config.get("hpo"))
    for method in (config.get("methods") or {}):
        if training_for(config, method).get("hpo"):
            study = study_settings(config, method)
            if hpo.trial_jobs > study.trials:
                raise SeqpeftInputError("hpo.trial_jobs", f"{hpo.trial_jobs} trials per round for the {study.trials} "
                                        f"trials of space {study.space!r} (method {method!r}) would leave trial "
                                        "slots with nothing to do.",
                                        fix=f"set trial_jobs to at most {study.trials}, or raise that space's trials.")


def study_name(job, study: StudySettings) -> str:
    """``task/model/method/partition/<hash>``: the hash covers what a trial trains with and how the
    study samples and prunes, not how many trials it has."""
    identity = {"task": job.task, "model": job.model, "method": job.method, "partition": str(job.partition),
                "task_spec": job.task_spec, "model_spec": job.model_spec, "method_spec": job.method_spec,
                "training": {key: value for key, value in job.training.items() if key not in (*TUNED_KEYS, "hpo")},
                "study": study.params()}
    digest = hashlib.sha256(json.dumps(canonical(identity), sort_keys=True, default=str).encode()).hexdigest()
    return f"{job.task}/{job.model}/{job.method}/{job.partition}/{digest[:16]}"


# ---- trials ----


def selection_value(dev: dict, select_on: str = "mcc") -> float:
    """The dev value model selection maximises (``selection`` where the objective defines one;
    minus the dev loss under ``training.select_on: loss``): ``seqpeft.config.recipe.selection_score``."""
    return selection_score(dev, select_on)


def trial_training(training: dict, study: StudySettings, learning_rate: float, batch_size: int) -> dict:
    """A trial's training settings: the run's own, with the trial's values and the space's epochs."""
    values = {**training, "learning_rate": float(learning_rate), "batch_size": int(batch_size), "hpo": False}
    if study.epochs is not None:
        values["epochs"] = min(study.epochs, int(training["epochs"]))
    return values
