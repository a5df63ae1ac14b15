"""statistics: paired comparisons (comparisons.csv) and ranks across tasks (ranks.csv)."""

from _script import logged

with logged(snakemake):  # noqa: F821 - injected by Snakemake
    from seqpeft.analysis.stats import write_statistics

    sm = snakemake  # noqa: F821
    write_statistics(sm.input.summary, sm.input.table, list(sm.input.predictions), sm.output.comparisons,
                     sm.output.ranks, list(sm.params.models), sm.config)
