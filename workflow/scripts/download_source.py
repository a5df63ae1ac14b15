"""download_source: fetch, verify (sha256) and unpack one source into its directory."""

from pathlib import Path

from _script import logged

with logged(snakemake):  # noqa: F821 - injected by Snakemake
    from seqpeft.download import fetch_source

    fetch_source(dict(snakemake.params.spec), Path(snakemake.output[0]))  # noqa: F821
