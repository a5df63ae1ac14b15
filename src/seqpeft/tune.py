"""Hyper-parameter search: a deterministic study of learning rate x batch size per task x model x method.

A trial is a real seqpeft fine-tune (``run_finetune`` with ``dev_only``: nothing is written, the
test split is never evaluated) that reports the dev selection metric after every evaluation.

**A study is a function of its config and seed**, never of timing. Its trials run in *rounds* of
``trial_jobs`` trials: trial ``k`` is trial ``k % trial_jobs`` of round ``k // trial_jobs``, and
each trial is one workflow job (rule ``tune_trials``) whose inputs are the result files of every
trial of the earlier rounds. So:

- the parameters of round ``r`` are proposed by an Optuna sampler (TPE; random for the first
  ``startup_trials``) seeded by ``(hpo.seed, r)``, on an in-memory study rebuilt, in trial-number
  order, from the recorded results of rounds ``< r`` only. Every trial of the round computes the
  same proposals and takes its own (the round's k-th ask), so trials of one round run in parallel
  and differ from each other (the sampler's constant liar spreads them);
- a trial is pruned by the configured Optuna pruner against the trials of earlier rounds only
  (median: below the median of earlier rounds' complete trials at the same evaluation), never
  against a trial of its own round that happens to have reported first;
- training is deterministic for given settings, so a trial's result depends only on its parameters.

The round is a barrier: round ``r`` starts when every trial of rounds ``< r`` has its result file.
Snakemake holds the barrier (the files are the jobs' inputs), so there is no waiting job and no
deadlock when fewer cores or cluster slots than ``trial_jobs`` are free; with ``trial_jobs: 1``
the trials simply run one after another. Each trial writes its result atomically as its job's
output: a killed trial reruns from scratch with the same parameters (it has no other state), and a
finished trial is never rerun unless the study's settings change.

Search spaces are named in ``hpo.spaces``; a run tunes in its method family's space (see
``METHOD_SPACES``: full fine-tuning, low-rank, adapters, prompts, head only) unless its
``training.hpo`` names a space. The spaces' defaults (and every other default of ``hpo``) live in
the workflow's JSON schema, which ``HpoSettings.from_dict`` reads when it is given a partial section.

Importing this module is light (the workflow's config check uses it): optuna, torch and the
training loop are imported only by the functions that run trials.
"""

from __future__ import annotations

import copy
import functools
import gc
import hashlib
import json
import math
from dataclasses import asdict, dataclass, fields, replace
from pathlib import Path
from typing import Any, Callable

from seqpeft.errors import SeqpeftInputError

TUNED_KEYS = ("learning_rate", "batch_size")  # what a study chooses; the configured values do not matter to it
DIRECTION = "maximize"
METRIC = "dev selection metric (MCC; detection + cleavage-site MCC for signal peptides)"
SCHEMA = Path(__file__).resolve().parents[2] / "workflow" / "schemas" / "config.schema.yaml"

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


@functools.cache
def schema_defaults() -> dict:
    """The ``hpo`` section's defaults, read from the workflow's JSON schema (their only home)."""
    import yaml

    try:
        schema = yaml.safe_load(SCHEMA.read_text())["properties"]["hpo"]
    except (OSError, KeyError, TypeError) as error:
        raise SeqpeftInputError(SCHEMA, f"cannot read the hpo defaults ({type(error).__name__}: {error}).",
                                fix="run from a checkout of the repository (the schema is part of the workflow), "
                                    "or give the hpo section in full.") from error
    return _defaults(schema)


def _defaults(schema: dict) -> dict:
    values = {}
    for key, sub in (schema.get("properties") or {}).items():
        if "default" not in sub:
            continue
        value = copy.deepcopy(sub["default"])
        if isinstance(value, dict) and sub.get("properties"):
            value = {**_defaults(sub), **value}
        values[key] = value
    return values


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
        defaults = schema_defaults()
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
    from seqpeft.config import registry_method, training_for

    hpo = training_for(config, method).get("hpo")
    if isinstance(hpo, str):
        return hpo
    spec = (config.get("methods") or {}).get(method) or {}
    if spec.get("peft") is not None:
        return PASSTHROUGH_SPACE
    registry = registry_method(config, method)
    if registry not in METHOD_SPACES:
        raise SeqpeftInputError(f"methods.{method}", f"method {registry!r} has no default search space.",
                                fix=f"name one: training: {{hpo: <space>}} with a space of hpo.spaces.")
    return METHOD_SPACES[registry]


def study_settings(config: dict, method: str) -> StudySettings:
    """The study that tunes the runs of ``method``."""
    from seqpeft.config import _training_key

    return HpoSettings.from_dict(config.get("hpo")).study(space_of(config, method),
                                                          where=_training_key(config, method, "hpo"))


def check_hpo(config: dict) -> None:
    """The ``hpo`` section, and the search space of every method that tunes (``check_config``)."""
    from seqpeft.config import training_for

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
    from seqpeft.config import canonical

    identity = {"task": job.task, "model": job.model, "method": job.method, "partition": str(job.partition),
                "task_spec": job.task_spec, "model_spec": job.model_spec, "method_spec": job.method_spec,
                "training": {key: value for key, value in job.training.items() if key not in (*TUNED_KEYS, "hpo")},
                "study": study.params()}
    digest = hashlib.sha256(json.dumps(canonical(identity), sort_keys=True, default=str).encode()).hexdigest()
    return f"{job.task}/{job.model}/{job.method}/{job.partition}/{digest[:16]}"


# ---- trials ----


def selection_value(dev: dict) -> float:
    """The dev value model selection maximises (``selection`` where the objective defines one)."""
    return float(dev.get("selection", dev["mcc"]))


def trial_training(training: dict, study: StudySettings, learning_rate: float, batch_size: int) -> dict:
    """A trial's training settings: the run's own, with the trial's values and the space's epochs."""
    from seqpeft.train import TrainingConfig

    values = {**training, "learning_rate": float(learning_rate), "batch_size": int(batch_size), "hpo": False}
    if study.epochs is not None:
        values["epochs"] = min(study.epochs, int(training.get("epochs", TrainingConfig.epochs)))
    return values


def round_seed(study: StudySettings, round_: int) -> int:
    """The sampler seed of round ``round_``: a function of the study seed and the round only."""
    import numpy as np

    return int(np.random.SeedSequence([study.seed, round_]).generate_state(1)[0])


def read_trial(path: Path, name: str | None = None, number: int | None = None) -> dict:
    """A trial's result file, checked to belong to study ``name`` and to be trial ``number``."""
    path = Path(path)
    try:
        record = json.loads(path.read_text())
        record["trial"], record["state"], record["params"]  # noqa: B018 - the keys every record has
    except (OSError, ValueError, KeyError, TypeError) as error:
        raise SeqpeftInputError(path, f"is not a readable trial result ({type(error).__name__}: {error}).",
                                fix="delete it and rerun the tune_trials job that writes it.") from error
    if name is not None and record.get("study") != name:
        raise SeqpeftInputError(path, f"belongs to study {record.get('study')!r}, not {name!r} (it was run with "
                                "other settings).", fix="delete the study's trials/ directory and rerun the workflow.")
    if number is not None and record["trial"] != number:
        raise SeqpeftInputError(path, f"holds trial {record['trial']}, not trial {number}.",
                                fix="delete it and rerun the tune_trials job that writes it.")
    return record


def _frozen_trial(record: dict, distributions: dict):
    import optuna
    from optuna.trial import TrialState

    state = TrialState[record["state"]]
    return optuna.trial.create_trial(
        state=state, value=record["value"] if state == TrialState.COMPLETE else None, params=record["params"],
        distributions=distributions, system_attrs=record.get("system_attrs") or {},
        intermediate_values={int(step): value for step, value in record.get("intermediate_values") or []})


def replay_study(study: StudySettings, round_: int, earlier: list[dict]):
    """An in-memory Optuna study holding the results of the rounds before ``round_`` (in trial
    order), with round ``round_``'s seeded sampler and the study's pruner."""
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    if [record["trial"] for record in earlier] != list(range(round_ * study.trial_jobs)):
        raise ValueError(f"round {round_} needs trials 0..{round_ * study.trial_jobs - 1} in order, "
                         f"got {[record['trial'] for record in earlier]}")
    sampler = optuna.samplers.TPESampler(seed=round_seed(study, round_), n_startup_trials=study.startup_trials,
                                         constant_liar=True)
    replay = optuna.create_study(direction=DIRECTION, sampler=sampler, pruner=PRUNERS[study.pruner.kind](study.pruner))
    distributions = study.distributions()
    for record in earlier:
        replay.add_trial(_frozen_trial(record, distributions))
    return replay


def propose(study: StudySettings, trial: int, earlier: list[dict]):
    """The replayed study and the asked Optuna trial of study trial ``trial``: the round's asks in
    order up to this trial's (so its parameters do not depend on how many trials follow it)."""
    round_ = study.round_of(trial)
    replay = replay_study(study, round_, earlier)
    distributions = study.distributions()
    asked = None
    for _ in range(trial - round_ * study.trial_jobs + 1):
        asked = replay.ask(distributions)
    assert asked.number == trial, (asked.number, trial)
    return replay, asked


def _release_memory() -> None:
    gc.collect()
    import torch

    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def run_trial(job, study: StudySettings, trial: int, earlier_paths: list[Path]) -> dict:
    """Run trial ``trial`` of the study of ``job`` (a ``FinetuneJob``; its ``out_dir`` is never
    written) given the result files of the earlier rounds' trials, and return its result record.

    Nothing here depends on when or where the other trials ran: only on ``study``, ``trial`` and
    the earlier results.
    """
    import optuna
    from optuna.trial import TrialState

    from seqpeft.train import run_finetune

    name = study_name(job, study)
    needed = list(study.earlier_trials(trial))
    if len(earlier_paths) != len(needed):
        raise SeqpeftInputError(None, f"trial {trial} (round {study.round_of(trial)} of {study.trial_jobs} trials) needs "
                                f"the results of trials 0..{len(needed) - 1}, given {len(earlier_paths)} files.",
                                fix="run it through the workflow's tune_trials rule.")
    earlier = [read_trial(path, name, number) for path, number in zip(earlier_paths, needed)]
    replay, asked = propose(study, trial, earlier)
    params = dict(asked.params)
    print(f"[seqpeft] study {name}, space {study.space}: trial {trial} (round {study.round_of(trial)}, "
          f"{len(earlier)} earlier results): learning_rate {params['learning_rate']:.4g}, "
          f"batch_size {params['batch_size']}", flush=True)

    def report(evaluation: int, dev: dict) -> None:
        asked.report(selection_value(dev), evaluation)
        if asked.should_prune():
            raise optuna.TrialPruned(f"pruned at evaluation {evaluation}")

    spec = replace(job, training=trial_training(job.training, study, params["learning_rate"], params["batch_size"]))
    result = None
    try:
        result = run_finetune(spec, on_evaluate=report, dev_only=True)
    except optuna.TrialPruned as pruned:
        state, value = TrialState.PRUNED, None
        print(f"[seqpeft] trial {trial} {pruned} (behind the earlier rounds)")
    else:
        value = selection_value(result["dev"])
        state = TrialState.COMPLETE if math.isfinite(value) else TrialState.FAIL
        print(f"[seqpeft] trial {trial}: dev {value:.4f} (best epoch {result['best_epoch']})" if state == TrialState.COMPLETE
              else f"[seqpeft] trial {trial}: no finite dev value ({value}); recorded as failed")
        value = value if state == TrialState.COMPLETE else None
    finally:
        _release_memory()
    frozen = replay.get_trials(deepcopy=False)[trial]
    return {
        "study": name, "trial": trial, "round": study.round_of(trial), "slot": trial % study.trial_jobs,
        "space": study.space, "params": {"learning_rate": float(params["learning_rate"]),
                                         "batch_size": int(params["batch_size"])},
        "state": state.name, "value": value,
        "intermediate_values": [[int(step), float(v)] for step, v in sorted(frozen.intermediate_values.items())],
        "system_attrs": dict(frozen.system_attrs),
        "best_epoch": int(result["best_epoch"]) if result is not None else None,
    }


# ---- the study's answer ----


def write_best_params(trial_paths: list[Path], out_path: Path, study: StudySettings | None = None) -> dict:
    """``best_params.json`` from the trials' result files (one study, trials 0..n-1): the best
    complete trial (the lowest number among equals) and the whole trial history."""
    from seqpeft.train import write_json_atomic

    records = [read_trial(path) for path in trial_paths]
    names = {record["study"] for record in records}
    if len(names) != 1:
        raise SeqpeftInputError(trial_paths[0], f"the trials belong to different studies: {sorted(names)}.",
                                fix="delete the study's trials/ directory and rerun the workflow.")
    records.sort(key=lambda record: record["trial"])
    if [record["trial"] for record in records] != list(range(len(records))):
        raise SeqpeftInputError(trial_paths[0], f"trials {[r['trial'] for r in records]} are not 0..{len(records) - 1}.")
    counts = {state: sum(record["state"] == state.upper() for record in records) for state in ("complete", "pruned", "fail")}
    complete = [record for record in records if record["state"] == "COMPLETE"]
    if not complete:
        raise RuntimeError(f"study {records[0]['study']} has no complete trial ({counts['pruned']} pruned, "
                           f"{counts['fail']} failed): widen the learning-rate range of space {records[0]['space']!r}, "
                           "or relax hpo.pruner.")
    best = max(complete, key=lambda record: (record["value"], -record["trial"]))
    summary = {
        "study": best["study"], "space": best["space"], "metric": METRIC, "direction": DIRECTION,
        "best_value": best["value"], "best_trial": best["trial"], "params": dict(best["params"]),
        "trials": {"complete": counts["complete"], "pruned": counts["pruned"], "failed": counts["fail"]},
        "history": [{key: record[key] for key in ("trial", "round", "params", "state", "value", "intermediate_values",
                                                  "best_epoch")} for record in records],
    }
    if study is not None:
        summary["search_space"] = {"name": study.space, "learning_rate": list(study.learning_rate),
                                   "batch_sizes": list(study.batch_sizes), "epochs": study.epochs,
                                   "trials_per_round": study.trial_jobs, "seed": study.seed,
                                   "startup_trials": study.startup_trials, "pruner": asdict(study.pruner)}
    write_json_atomic(out_path, summary)
    print(f"[seqpeft] best of {summary['study']}: trial {best['trial']}, dev {best['value']:.4f} with "
          f"{summary['params']} ({counts['complete']} complete, {counts['pruned']} pruned, {counts['fail']} failed)")
    return summary


def read_best_params(path: Path) -> dict:
    """A ``best_params.json``, checked: the learning rate and batch size a fine-tuning job will use."""
    path = Path(path)
    try:
        data = json.loads(path.read_text())
        learning_rate = data["params"]["learning_rate"]
        batch_size = data["params"]["batch_size"]
    except (OSError, ValueError, KeyError, TypeError) as error:
        raise SeqpeftInputError(path, f"is not a readable best_params.json ({type(error).__name__}: {error}).",
                                fix="rerun the tune rule for this run.") from error
    if isinstance(learning_rate, bool) or not isinstance(learning_rate, (int, float)) or not learning_rate > 0:
        raise SeqpeftInputError(path, f"params.learning_rate must be a positive number, got {learning_rate!r}.")
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise SeqpeftInputError(path, f"params.batch_size must be a positive integer, got {batch_size!r}.")
    return data
