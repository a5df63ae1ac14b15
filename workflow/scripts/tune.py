"""tune: the best learning rate and batch size of a finished study, and its trial history, as best_params.json."""

from pathlib import Path

from _script import logged

with logged(snakemake):  # noqa: F821 - injected by Snakemake
    from seqpeft.training.tune import write_best_params
    from seqpeft.config.tune_settings import StudySettings

    sm = snakemake  # noqa: F821
    write_best_params([Path(path) for path in sm.input.trials], Path(sm.output[0]),
                      StudySettings.from_params(dict(sm.params.hpo)))
