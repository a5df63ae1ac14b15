"""resolved_pins: results/pins.resolved.yaml, what this run's hub models and sources were fetched at."""

from _script import logged

with logged(snakemake):  # noqa: F821 - injected by Snakemake
    from seqpeft.config.pins import write_resolved

    sm = snakemake  # noqa: F821
    models = {key[len("model_"):]: path for key, path in sm.input.items() if key.startswith("model_")}
    sources = {key[len("source_"):]: path for key, path in sm.input.items() if key.startswith("source_")}
    write_resolved(sm.output[0], models, sources)
