"""finetune: one task x model x method x partition run, from the tokenized cache to metrics.

The log is appended to, so that it keeps the story of a run across retries and requeues.
"""

from pathlib import Path

from _script import finetune_job, logged

with logged(snakemake, mode="a"):  # noqa: F821 - injected by Snakemake
    from seqpeft.training.launch import run_finetune
    from seqpeft.config.pins import add_revision_to_metrics, refuse_unpinned

    sm = snakemake  # noqa: F821
    refuse_unpinned(sm.config, "model", sm.wildcards.model, dict(sm.params.spec["model"]))
    best_params = sm.input.get("best_params")
    run_finetune(finetune_job(sm, Path(sm.output.metrics).parent, gpus=int(sm.resources.gpu),
                              best_params=Path(best_params) if best_params else None))
    add_revision_to_metrics(sm.output.metrics, sm.input.model)  # the commit used, for hub models
