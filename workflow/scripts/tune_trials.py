"""tune_trials: one trial job's share of the Optuna study of a task x model x method (x fold).

The log is appended to, so that it keeps the story of the study across retries.
"""

from pathlib import Path

from _script import finetune_job, logged

with logged(snakemake, mode="a"):  # noqa: F821 - injected by Snakemake
    from seqpeft.pins import refuse_unpinned
    from seqpeft.train import write_json_atomic
    from seqpeft.tune import HpoSettings, run_trials

    sm = snakemake  # noqa: F821
    refuse_unpinned(sm.config, "model", sm.wildcards.model, dict(sm.params.spec["model"]))
    summary = run_trials(finetune_job(sm, Path(sm.output[0]).parent), HpoSettings.from_dict(dict(sm.params.hpo)),
                         Path(sm.params.storage), int(sm.wildcards.trial_job))
    write_json_atomic(Path(sm.output[0]), summary)
