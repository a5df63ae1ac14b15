"""Hyper-parameter search: one Optuna study of learning rate x batch size per task x model x method.

A trial is a real seqpeft fine-tune (``run_finetune`` with ``dev_only``: nothing is written, the
test split is never evaluated) that reports the dev selection metric after every evaluation, so
the pruner can stop trials that fall behind. The study lives in an Optuna journal file (an
append-only log behind a lock file, which works on shared cluster filesystems without a database
server), so several workflow jobs can each run their share of the trials against it:

- trial job ``j`` of ``J`` owns ``trials // J`` (+1 for the first ``trials % J``) finished trials,
  tagged with its index, so the study ends with exactly ``trials`` finished trials however the
  jobs interleave, and a job that is rerun after a kill only runs what it still owes;
- a trial left running by a killed job is marked failed by that job's next attempt (Snakemake
  never runs two attempts of one job at once), so it neither counts nor blocks completion;
- the study name is a hash of everything a trial trains with, so a changed config starts a new
  study in the same file instead of mixing incompatible trials.

Importing this module is light (the workflow's config check uses ``HpoSettings``): optuna, torch
and the training loop are imported only by the functions that run trials.
"""

from __future__ import annotations

import gc
import hashlib
import json
import math
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path
from typing import Any, Callable

from seqpeft.errors import SeqpeftInputError

TRIAL_JOB_ATTR = "trial_job"
TUNED_KEYS = ("learning_rate", "batch_size")  # what a study chooses; the configured values do not matter to it
DIRECTION = "maximize"
METRIC = "dev selection metric (MCC; detection + cleavage-site MCC for signal peptides; minus dev loss under select_on: loss)"


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
    """How trials that fall behind are stopped early (evaluations are the pruner's steps)."""

    kind: str = "median"
    startup_trials: int = 2  # median: finished trials before any trial may be pruned
    warmup_evaluations: int = 1  # median: evaluations every trial gets before it may be pruned
    min_evaluations: int = 1  # successive_halving: evaluations of the first rung
    reduction_factor: int = 3  # successive_halving: 1 / fraction of trials promoted per rung


@dataclass(frozen=True)
class HpoSettings:
    """The config's ``hpo:`` section: search space, budget and pruning of every study."""

    trials: int = 8
    trial_jobs: int = 2
    learning_rate: tuple[float, float] = (1e-5, 1e-2)  # log-uniform
    batch_sizes: tuple[int, ...] = (16, 32, 64)
    epochs: int | None = None  # cap on a trial's epochs (the run's own training.epochs otherwise)
    seed: int = 0
    startup_trials: int | None = None  # random trials before TPE models the results; default trials // 2
    pruner: PrunerSettings = field(default_factory=PrunerSettings)

    @classmethod
    def from_dict(cls, values: dict | None, where: str = "hpo") -> "HpoSettings":
        """Check and fill in defaults; every problem names its config key."""
        values = dict(values or {})
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise SeqpeftInputError(f"{where}.{unknown[0]}", "unknown key.", fix=f"use only {sorted(known)}.")
        for key in ("trials", "trial_jobs", "seed"):
            if key in values:
                _integer(values[key], f"{where}.{key}", minimum=0 if key == "seed" else 1)
        if values.get("epochs") is not None:
            _integer(values["epochs"], f"{where}.epochs", minimum=1)
        if values.get("startup_trials") is not None:
            _integer(values["startup_trials"], f"{where}.startup_trials", minimum=0)
        if "learning_rate" in values:
            values["learning_rate"] = _log_range(values["learning_rate"], f"{where}.learning_rate")
        if "batch_sizes" in values:
            values["batch_sizes"] = _batch_sizes(values["batch_sizes"], f"{where}.batch_sizes")
        values["pruner"] = _pruner_settings(values.get("pruner"), f"{where}.pruner")
        settings = cls(**values)
        if settings.trial_jobs > settings.trials:
            raise SeqpeftInputError(f"{where}.trial_jobs", f"{settings.trial_jobs} trial jobs for {settings.trials} "
                                    "trials would leave jobs with nothing to do.",
                                    fix=f"set trial_jobs to at most {settings.trials}, or raise trials.")
        return settings

    def share(self, trial_job: int) -> int:
        """How many finished trials trial job ``trial_job`` owns (the shares add up to ``trials``)."""
        if not 0 <= trial_job < self.trial_jobs:
            raise SeqpeftInputError("hpo.trial_jobs", f"trial job {trial_job} does not exist ({self.trial_jobs} jobs).")
        return self.trials // self.trial_jobs + (1 if trial_job < self.trials % self.trial_jobs else 0)

    def as_dict(self) -> dict:
        values = asdict(self)
        values["learning_rate"] = list(self.learning_rate)
        values["batch_sizes"] = list(self.batch_sizes)
        return values

    def distributions(self) -> dict:
        from optuna.distributions import CategoricalDistribution, FloatDistribution

        low, high = self.learning_rate
        return {"learning_rate": FloatDistribution(low, high, log=True),
                "batch_size": CategoricalDistribution(list(self.batch_sizes))}


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


def _pruner_settings(value: Any, key: str) -> PrunerSettings:
    value = dict(value or {})
    known = {f.name for f in fields(PrunerSettings)}
    unknown = sorted(set(value) - known)
    if unknown:
        raise SeqpeftInputError(f"{key}.{unknown[0]}", "unknown key.", fix=f"use only {sorted(known)}.")
    kind = value.get("kind", PrunerSettings.kind)
    if kind not in PRUNERS:
        raise SeqpeftInputError(f"{key}.kind", f"unknown pruner {kind!r}; known: {', '.join(PRUNERS)}.")
    for name, minimum in (("startup_trials", 0), ("warmup_evaluations", 0), ("min_evaluations", 1),
                          ("reduction_factor", 2)):
        if name in value:
            _integer(value[name], f"{key}.{name}", minimum)
    return PrunerSettings(**value)


# ---- studies ----


def study_name(job, hpo: HpoSettings) -> str:
    """``task/model/method/partition/<hash>``: the hash covers what a trial trains with and the
    search space, not the budget (raising ``trials`` extends the study) or the pruner."""
    from seqpeft.config import canonical

    identity = {"task": job.task, "model": job.model, "method": job.method, "partition": str(job.partition),
                "task_spec": job.task_spec, "model_spec": job.model_spec, "method_spec": job.method_spec,
                "training": {key: value for key, value in job.training.items() if key not in (*TUNED_KEYS, "hpo")},
                "learning_rate": list(hpo.learning_rate), "batch_sizes": list(hpo.batch_sizes),
                "epochs": hpo.epochs, "seed": hpo.seed}
    digest = hashlib.sha256(json.dumps(canonical(identity), sort_keys=True, default=str).encode()).hexdigest()
    return f"{job.task}/{job.model}/{job.method}/{job.partition}/{digest[:16]}"


def journal_storage(path: Path):
    """An Optuna storage in a journal file that several processes (and hosts) may share."""
    from optuna.storages import JournalStorage
    from optuna.storages.journal import JournalFileBackend

    Path(path).parent.mkdir(parents=True, exist_ok=True)
    return JournalStorage(JournalFileBackend(str(path)))


def open_study(storage_path: Path, name: str, hpo: HpoSettings, sampler_seed: int | None = None):
    """Create the study, or load it if another trial job (or an earlier attempt) already did."""
    import optuna

    startup = hpo.startup_trials if hpo.startup_trials is not None else max(1, hpo.trials // 2)
    sampler = optuna.samplers.TPESampler(seed=sampler_seed, n_startup_trials=startup)
    return optuna.create_study(storage=journal_storage(storage_path), study_name=name, direction=DIRECTION,
                               sampler=sampler, pruner=PRUNERS[hpo.pruner.kind](hpo.pruner), load_if_exists=True)


def selection_value(dev: dict, select_on: str = "mcc") -> float:
    """The dev value model selection maximises (``selection`` where the objective defines one;
    minus the dev loss under ``training.select_on: loss``): seqpeft.recipe.selection_score."""
    from seqpeft.recipe import selection_score

    return selection_score(dev, select_on)


def trial_training(training: dict, hpo: HpoSettings, learning_rate: float, batch_size: int) -> dict:
    """A trial's training settings: the run's own, with the trial's values and the epoch cap."""
    from seqpeft.train import TrainingConfig

    values = {**training, "learning_rate": float(learning_rate), "batch_size": int(batch_size), "hpo": False}
    if hpo.epochs is not None:
        values["epochs"] = min(hpo.epochs, int(training.get("epochs", TrainingConfig.epochs)))
    return values


def _sampler_seed(hpo: HpoSettings, trial_job: int, started_before: int) -> int:
    """Different per trial job (identical seeds would propose identical trials in parallel) and per
    attempt (a resumed job must not repeat the proposals of its killed attempt)."""
    import numpy as np

    return int(np.random.SeedSequence([hpo.seed, trial_job, started_before]).generate_state(1)[0])


def _release_memory() -> None:
    gc.collect()
    import torch

    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def run_trials(job, hpo: HpoSettings, storage_path: Path, trial_job: int) -> dict:
    """Run trial job ``trial_job``'s share of the study of ``job`` and return what it did.

    ``job`` is the run being tuned (a ``FinetuneJob``; its ``out_dir`` is never written).
    """
    import optuna
    from optuna.trial import TrialState

    from seqpeft.train import run_finetune

    share = hpo.share(trial_job)
    name = study_name(job, hpo)
    probe = open_study(storage_path, name, hpo)

    def own_trials(study):
        return [t for t in study.get_trials(deepcopy=False) if t.user_attrs.get(TRIAL_JOB_ATTR) == trial_job]

    stale = [t for t in own_trials(probe) if t.state == TrialState.RUNNING]
    for trial in stale:
        probe.tell(trial.number, state=TrialState.FAIL)
        print(f"[seqpeft] trial {trial.number} was left running by a killed attempt of trial job {trial_job}: marked failed")
    study = open_study(storage_path, name, hpo, sampler_seed=_sampler_seed(hpo, trial_job, len(own_trials(probe))))

    def finished(study) -> int:
        return sum(t.state in (TrialState.COMPLETE, TrialState.PRUNED) for t in own_trials(study))

    print(f"[seqpeft] study {name} in {storage_path}: trial job {trial_job} of {hpo.trial_jobs} owns {share} of "
          f"{hpo.trials} trials, {finished(study)} done")
    failures = 0
    distributions = hpo.distributions()
    from seqpeft.train import TrainingConfig

    select_on = TrainingConfig.from_dict(job.training).select_on  # trials are ranked as runs select
    while finished(study) < share:
        trial = study.ask(distributions)
        trial.set_user_attr(TRIAL_JOB_ATTR, trial_job)
        params = dict(trial.params)
        print(f"[seqpeft] trial {trial.number}: learning_rate {params['learning_rate']:.3g}, "
              f"batch_size {params['batch_size']}", flush=True)

        def report(evaluation: int, dev: dict, trial=trial) -> None:
            trial.report(selection_value(dev, select_on), evaluation)
            if trial.should_prune():
                raise optuna.TrialPruned(f"pruned at evaluation {evaluation}")

        trial_job_spec = replace(job, training=trial_training(job.training, hpo, params["learning_rate"],
                                                              params["batch_size"]))
        try:
            result = run_finetune(trial_job_spec, on_evaluate=report, dev_only=True)
        except optuna.TrialPruned as pruned:
            study.tell(trial, state=TrialState.PRUNED)
            print(f"[seqpeft] trial {trial.number} {pruned}")
        except BaseException:
            study.tell(trial, state=TrialState.FAIL)
            raise
        else:
            value = selection_value(result["dev"], select_on)
            if math.isfinite(value):
                study.tell(trial, value)
                print(f"[seqpeft] trial {trial.number}: dev {value:.4f} (best epoch {result['best_epoch']})")
            else:
                study.tell(trial, state=TrialState.FAIL)
                failures += 1
                print(f"[seqpeft] trial {trial.number}: no finite dev value ({value}); marked failed")
                if failures > share:
                    raise RuntimeError(f"{failures} trials of trial job {trial_job} gave no finite dev value; "
                                       "check the task's dev split and hpo.learning_rate.")
        finally:
            _release_memory()

    own = own_trials(study)
    return {"study": name, "storage": str(storage_path), "trial_job": trial_job, "trial_jobs": hpo.trial_jobs,
            "share": share,
            "trials": [{"number": t.number, "state": t.state.name, "params": t.params, "value": t.value,
                        "evaluations": len(t.intermediate_values)} for t in own]}


def summarize_study(storage_path: Path, name: str, hpo: HpoSettings | None = None) -> dict:
    """The best trial of a study and how its trials ended, for ``best_params.json``."""
    import optuna
    from optuna.trial import TrialState

    try:
        study = optuna.load_study(study_name=name, storage=journal_storage(storage_path))
    except KeyError as error:
        raise SeqpeftInputError(storage_path, f"holds no study {name!r}.",
                                fix="rerun the tune_trials jobs (delete their trials/*.json markers).") from error
    trials = study.get_trials(deepcopy=False)
    counts = {state.name.lower(): sum(t.state == state for t in trials)
              for state in (TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL, TrialState.RUNNING)}
    if not counts["complete"]:
        raise RuntimeError(f"study {name} in {storage_path} has no complete trial ({counts['pruned']} pruned, "
                           f"{counts['fail']} failed): widen hpo.learning_rate, or relax hpo.pruner.")
    best = study.best_trial
    summary = {
        "study": name, "storage": str(storage_path), "metric": METRIC, "direction": DIRECTION,
        "best_value": best.value, "best_trial": best.number,
        "params": {"learning_rate": float(best.params["learning_rate"]), "batch_size": int(best.params["batch_size"])},
        "trials": {"complete": counts["complete"], "pruned": counts["pruned"], "failed": counts["fail"],
                   "running": counts["running"]},
    }
    if hpo is not None:
        summary["search_space"] = {"learning_rate": list(hpo.learning_rate), "batch_sizes": list(hpo.batch_sizes),
                                   "epochs": hpo.epochs}
    return summary


def write_best_params(trial_markers: list[Path], out_path: Path) -> dict:
    """``best_params.json`` from the study that the trial jobs' markers name (they must agree)."""
    from seqpeft.train import write_json_atomic

    markers = [json.loads(Path(path).read_text()) for path in trial_markers]
    studies = {(marker["study"], marker["storage"]) for marker in markers}
    if len(studies) != 1:
        raise SeqpeftInputError(trial_markers[0], f"the trial jobs ran different studies: {sorted(studies)}.",
                                fix="rerun the tune_trials jobs of this run (delete their trials/*.json markers).")
    ((name, storage),) = studies
    summary = summarize_study(Path(storage), name)
    summary["trial_jobs"] = len(markers)
    write_json_atomic(out_path, summary)
    print(f"[seqpeft] best of {name}: dev {summary['best_value']:.4f} with {summary['params']} "
          f"({summary['trials']['complete']} complete, {summary['trials']['pruned']} pruned)")
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
