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

Search spaces and the study's settings: ``seqpeft.config.tune_settings``. Optuna and torch are imported
only by the functions that run trials.
"""

from __future__ import annotations

import gc
import json
import math
from dataclasses import asdict, replace
from pathlib import Path

from seqpeft.util.atomic import write_json_atomic
from seqpeft.util.errors import SeqpeftInputError
from seqpeft.training.launch import run_finetune
from seqpeft.config.settings import TrainingConfig
from seqpeft.config.tune_settings import DIRECTION, METRIC, PRUNERS, StudySettings, selection_value, study_name, trial_training


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

    select_on = TrainingConfig.from_dict(job.training).select_on  # trials are ranked as runs select

    def report(evaluation: int, dev: dict) -> None:
        asked.report(selection_value(dev, select_on), evaluation)
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
        value = selection_value(result["dev"], select_on)
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
