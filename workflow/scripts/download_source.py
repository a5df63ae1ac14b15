"""download_source: fetch, verify (sha256 / git blob id) and unpack one source into its directory."""

from pathlib import Path

from _script import logged

with logged(snakemake):  # noqa: F821 - injected by Snakemake
    from seqpeft.data.download import fetch_source
    from seqpeft.config.pins import SOURCE_RECORD, allow_unpinned, refuse_unpinned

    sm = snakemake  # noqa: F821
    spec = dict(sm.params.spec)
    refuse_unpinned(sm.config, "source", sm.wildcards.source, spec)
    digests = fetch_source(spec, Path(sm.output[0]), verify=not allow_unpinned(sm.config), record=SOURCE_RECORD)
    print(f"[seqpeft] source {sm.wildcards.source}: {spec['url']} {digests}")
