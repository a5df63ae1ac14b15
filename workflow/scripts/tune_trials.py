"""tune_trials: one trial job's share of the Optuna study of a task x model x method (x fold).

The log is appended to, so that it keeps the story of the study across retries.
"""

from pathlib import Path

from _script import logged

with logged(snakemake, mode="a"):  # noqa: F821 - injected by Snakemake
    from seqpeft.train import FinetuneJob, write_json_atomic
    from seqpeft.tune import HpoSettings, run_trials

    sm = snakemake  # noqa: F821
    job = FinetuneJob(
        task=sm.wildcards.task,
        model=sm.wildcards.model,
        method=sm.wildcards.method,
        partition=sm.wildcards.partition,
        task_spec=dict(sm.params.task),
        model_spec=dict(sm.params.model),
        method_spec=dict(sm.params.method),
        training=dict(sm.params.training),
        cache_path=Path(sm.input.cache),
        model_dir=Path(sm.input.model),
        out_dir=Path(sm.output[0]).parent,
        threads=int(sm.threads),
    )
    summary = run_trials(job, HpoSettings.from_dict(dict(sm.params.hpo)), Path(sm.params.storage),
                         int(sm.wildcards.trial_job))
    write_json_atomic(Path(sm.output[0]), summary)
