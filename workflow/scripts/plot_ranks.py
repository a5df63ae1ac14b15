"""rank_figure: the critical-difference diagram of one model's (or all models') average ranks."""

from _script import logged

with logged(snakemake):  # noqa: F821 - injected by Snakemake
    from seqpeft.analysis.rank_figure import plot_ranks

    sm = snakemake  # noqa: F821
    plot_ranks(sm.input.ranks, sm.wildcards.scope, sm.output.png, sm.output.svg)
