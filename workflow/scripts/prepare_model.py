"""prepare_model: download a hub model at its commit (weights converted to safetensors and checked)
or build a tiny one, into a directory loadable offline."""

from pathlib import Path

from _script import logged

with logged(snakemake):  # noqa: F821 - injected by Snakemake
    from seqpeft.models.prepare import prepare_model
    from seqpeft.config.pins import refuse_unpinned

    sm = snakemake  # noqa: F821
    spec = dict(sm.params.spec)
    refuse_unpinned(sm.config, "model", sm.wildcards.model, spec)
    tokenizer = sm.input.get("tokenizer")
    prepare_model(sm.wildcards.model, spec, Path(sm.output[0]), Path(tokenizer) if tokenizer else None)
