"""build_tokenizer: save one of the project's own tokenizers."""

from pathlib import Path

from _script import logged

with logged(snakemake):  # noqa: F821 - injected by Snakemake
    from seqpeft.data.tokenize import build_tokenizer

    build_tokenizer(dict(snakemake.params.spec), Path(snakemake.output[0]))  # noqa: F821
