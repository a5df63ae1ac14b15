"""tune_trials: one trial of the deterministic study of a task x model x method (x fold), from the
results of the earlier rounds' trials (seqpeft.training.tune.run_trial). The log is appended to, so that it
keeps the story of a trial across retries."""

from pathlib import Path

from _script import finetune_job, logged

with logged(snakemake, mode="a"):  # noqa: F821 - injected by Snakemake
    from seqpeft.util.atomic import write_json_atomic
    from seqpeft.config.pins import refuse_unpinned
    from seqpeft.training.tune import run_trial
    from seqpeft.config.tune_settings import StudySettings

    sm = snakemake  # noqa: F821
    refuse_unpinned(sm.config, "model", sm.wildcards.model, dict(sm.params.spec["model"]))
    record = run_trial(finetune_job(sm, Path(sm.output[0]).parent), StudySettings.from_params(dict(sm.params.hpo)),
                       int(sm.wildcards.trial), [Path(path) for path in sm.input.earlier])
    write_json_atomic(Path(sm.output[0]), record)
