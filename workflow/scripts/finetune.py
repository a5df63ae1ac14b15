"""finetune: one task x model x method x partition run, from the tokenized cache to metrics.

The log is appended to, so that it keeps the story of a run across retries and requeues.
"""

from pathlib import Path

from _script import logged

with logged(snakemake, mode="a"):  # noqa: F821 - injected by Snakemake
    from seqpeft.train import FinetuneJob, run_finetune

    sm = snakemake  # noqa: F821
    run_finetune(
        FinetuneJob(
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
            out_dir=Path(sm.output.metrics).parent,
            threads=int(sm.threads),
            best_params=Path(sm.input.best_params) if sm.input.get("best_params") else None,
            gpus=int(sm.resources.gpu),
        )
    )
