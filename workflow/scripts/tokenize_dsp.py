"""tokenize_dsp: one task's data through its domain-shift-prompting template for one model (.npz)."""

from pathlib import Path

from _script import logged

with logged(snakemake):  # noqa: F821 - injected by Snakemake
    from seqpeft.tasks import tokenize_dsp_task

    sm = snakemake  # noqa: F821
    tokenize_dsp_task(
        dict(sm.params.task),
        Path(sm.params.data_path),
        Path(sm.input.tokenizer),
        dict(sm.params.dsp),
        Path(sm.output[0]),
        model=sm.wildcards.model,
    )
