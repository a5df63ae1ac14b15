"""reproduction: each published number of config `published` beside this config's runs (csv + figure)."""

from _script import logged

with logged(snakemake):  # noqa: F821 - injected by Snakemake
    from seqpeft.analysis.reproduction import write_reproduction

    sm = snakemake  # noqa: F821
    write_reproduction(sm.input.published, sm.input.summary, list(sm.input.signalp), sm.output.table, sm.output.png, sm.output.svg)
