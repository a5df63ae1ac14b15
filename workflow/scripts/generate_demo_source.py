"""generate_demo_source: write a synthetic source (deterministic, no network)."""

from pathlib import Path

from _script import logged

with logged(snakemake):  # noqa: F821 - injected by Snakemake
    from seqpeft.tasks.demo_data import generate_source

    generate_source(dict(snakemake.params.spec), Path(snakemake.output[0]))  # noqa: F821
