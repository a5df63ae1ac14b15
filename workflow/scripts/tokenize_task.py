"""tokenize: validate one task's data and cache it tokenized with one tokenizer (.npz)."""

from pathlib import Path

from _script import logged

with logged(snakemake):  # noqa: F821 - injected by Snakemake
    from seqpeft.tasks import tokenize_task

    tokenize_task(
        dict(snakemake.params.task),  # noqa: F821
        Path(snakemake.params.data_path),  # noqa: F821
        Path(snakemake.input.tokenizer),  # noqa: F821
        Path(snakemake.output[0]),  # noqa: F821
    )
