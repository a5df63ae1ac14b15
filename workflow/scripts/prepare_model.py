"""prepare_model: download a pinned hub model or build a tiny one, into a directory loadable offline."""

from pathlib import Path

from _script import logged

with logged(snakemake):  # noqa: F821 - injected by Snakemake
    from seqpeft.models import prepare_model

    tokenizer = snakemake.input.get("tokenizer")  # noqa: F821
    prepare_model(
        snakemake.wildcards.model,  # noqa: F821
        dict(snakemake.params.spec),  # noqa: F821
        Path(snakemake.output[0]),  # noqa: F821
        Path(tokenizer) if tokenizer else None,
    )
